"""Produced: the per-atom DOS label store data/dos/ (index.csv, shard_*.npz, relabel_s9.txt).
Reproduce: `experiments/dos/run_label.py 2` (below); experiments/dos/run_final.sh chains it with training and evaluation.

Label the ≤ 8-atom MP-20 subset structures with per-atom GFN1-xTB DOS, cheapest supercells first (resumable).

Run from the project root (two single-threaded workers, lowest priority; `1` for one worker):
    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/run_label.py 2 >> results/dos/logs/label.log 2>&1 &
Order: the `N_TEST` test structures with the smallest 7 Å supercells, then every train structure by supercell size
(ties shuffled with a fixed seed). Finished ids (ok or failed) in data/dos/index.csv are skipped, so rerunning resumes.

Two passes over the train structures: pass 1 tries each SCF once (300 K, tblite's default mixer) and records
a failure with attempts = 1; pass 2 (`retry_failed="deferred"`) gives exactly those the rest of the retry ladder (300 K / 1000 K /
3000 K with damping 0.1; the failed first attempt is not run again: single-threaded tblite is deterministic). A structure gets the same label as from a one-pass run; the
retries, which cost about half of the CPU of the first 960 structures and rescued 9 % of them, just come last.
`run_label.py 2 pass1` (or `pass2`) runs only that pass, `run_label.py 2 pass1 100` only the structures whose supercell has ≤ 100
atoms (a prefix of the same order); `experiments/dos/run_final.sh` uses it to train on the pass-1 store before
the retries run.

Supercell rule (`supercell="auto"` of `xtalnb.dos.label_dos`): a 7 Å diagonal supercell of more than 100 atoms is replaced by
the smallest general supercell with every plane spacing ≥ 7 Å (`supercell_matrix`). The store was built partly before this rule
existed: 18 train structures had been tried with a 108-atom diagonal supercell. `relabel_large_diagonal` drops their index rows once
(listing them in `relabel_s9.txt` of the store), so they are labelled again by the rule a fresh rebuild would use.
"""
import sys
from pathlib import Path

import numpy as np

from xtalnb.data import load_dataset
from xtalnb.dos import (
    AUTO_DIAGONAL_MAX_ATOMS,
    INDEX_COLUMNS,
    label_dos,
    read_dos_index,
    supercell_repeats,
)
from xtalnb.utils import atomic_write

MIN_LENGTH, MAX_ATOMS, N_TEST, SEED = 7.0, 8, 100, 0
OUT = "data/dos"

def by_supercell_size(crystals, seed):
    rng = np.random.default_rng(seed)
    size = np.array([c.num_atoms * np.prod(supercell_repeats(c.lattice, MIN_LENGTH)) for c in crystals])
    order = np.lexsort((rng.random(len(crystals)), size))
    return [crystals[i] for i in order]

def relabel_large_diagonal(train):
    "Once: drop the index rows of train ids tried with a > 100-atom diagonal supercell before the smallest-supercell rule."
    marker = Path(OUT) / "relabel_s9.txt"
    if marker.exists():
        return
    big = {str(c.id) for c in train
           if c.num_atoms * np.prod(supercell_repeats(c.lattice, MIN_LENGTH)) > AUTO_DIAGONAL_MAX_ATOMS}
    idx = read_dos_index(OUT)
    old = idx[idx.id.isin(big) & (idx.split == "train")]
    if len(old):
        atomic_write(Path(OUT) / "index.csv", lambda tmp: idx[~idx.id.isin(old.id)][INDEX_COLUMNS].to_csv(tmp, index=False))
    atomic_write(marker, lambda tmp: Path(tmp).write_text("".join(f"{i}\n" for i in old.id)))
    print(f"supercell rule change: {len(old)} rows with > {AUTO_DIAGONAL_MAX_ATOMS}-atom diagonal supercells dropped "
          f"({(old.status == 'ok').sum()} ok, {(old.status != 'ok').sum()} failed), listed in {marker}", flush=True)

if __name__ == "__main__":
    n_jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    passes = sys.argv[2] if len(sys.argv) > 2 else "both"      # "pass1", "pass2" or "both"
    cap = int(sys.argv[3]) if len(sys.argv) > 3 else None       # only train structures whose 7 Å supercell has <= cap atoms
    if passes not in ("pass1", "pass2", "both"):
        sys.exit(f"second argument must be pass1, pass2 or both, got {passes!r}")
    kw = {"chunk_size": 20, "min_length": MIN_LENGTH, "max_super_atoms": 300, "n_jobs": n_jobs, "supercell": "auto"}
    test = by_supercell_size([c for c in load_dataset("mp20_subset", "test", progress=False) if c.num_atoms <= MAX_ATOMS], SEED)
    label_dos(test[:N_TEST], OUT, split="test", **kw)
    train = by_supercell_size([c for c in load_dataset("mp20_subset", "train", progress=False) if c.num_atoms <= MAX_ATOMS], SEED)
    relabel_large_diagonal(train)     # before the cap: it looks at the largest supercells
    if cap is not None:     # the order stays the same, so a capped run is a prefix of the full one
        train = [c for c in train if c.num_atoms * np.prod(supercell_repeats(c.lattice, MIN_LENGTH)) <= cap]
        print(f"capped at supercells of <= {cap} atoms: {len(train)} train structures", flush=True)
    if passes in ("pass1", "both"):
        print("pass 1: one SCF attempt each", flush=True)
        label_dos(train, OUT, split="train", retries=(), **kw)
    if passes in ("pass2", "both"):
        print("pass 2: the retry ladder for the SCF failures of pass 1", flush=True)
        label_dos(train, OUT, split="train", retry_failed="deferred", **kw)
