"""Label the ≤ 8-atom MP-20 subset structures with per-atom GFN1-xTB DOS, cheapest supercells first (resumable).

Run from the project root (one single-threaded worker, lowest priority):
    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python data/dos/run_label.py > data/dos/label.log 2>&1 &
Order: the `N_TEST` test structures with the smallest 7 Å supercells, then every train structure by supercell size
(ties shuffled with a fixed seed). Finished ids (ok or failed) in data/dos/index.csv are skipped, so rerunning resumes.
"""
import sys
import numpy as np
from xtalnb.data import load_dataset
from xtalnb.dos import label_dos, supercell_repeats

MIN_LENGTH, MAX_ATOMS, N_TEST, SEED = 7.0, 8, 100, 0
OUT = "data/dos"

def by_supercell_size(crystals, seed):
    rng = np.random.default_rng(seed)
    size = np.array([c.num_atoms * np.prod(supercell_repeats(c.lattice, MIN_LENGTH)) for c in crystals])
    order = np.lexsort((rng.random(len(crystals)), size))
    return [crystals[i] for i in order]

if __name__ == "__main__":
    test = by_supercell_size([c for c in load_dataset("mp20_subset", "test", progress=False) if c.num_atoms <= MAX_ATOMS], SEED)
    label_dos(test[:N_TEST], OUT, split="test", chunk_size=20, min_length=MIN_LENGTH, max_super_atoms=300)
    train = by_supercell_size([c for c in load_dataset("mp20_subset", "train", progress=False) if c.num_atoms <= MAX_ATOMS], SEED)
    label_dos(train, OUT, split="train", chunk_size=20, min_length=MIN_LENGTH, max_super_atoms=300)
