"""Produced: the checkpoint denovo-mp20-adapter-C-MLED (data/checkpoints/) and the label cache data/labels/m_led_train.csv.

Joint PIGEN conditioning (C, M_LED): adapter fine-tune of a shipped de novo model on a random 2,000-crystal subset of the MP-20
train split (seed 0). Resumable: M_LED labels are cached in data/labels/m_led_train.csv, training state in the runs dir.
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../experiments/conditional/run_c_mled.py [wall_budget_s] [base] [name] &
Defaults: base denovo-mp20, name denovo-mp20-adapter-C-MLED (experiments/repro_pigen/finetune_mattergen_c_mled.py passes the
MatterGen-family base)."""
import sys
import time

import numpy as np
import torch

from xtalnb.conditional import attach_conditions, finetune_conditional
from xtalnb.data import load_dataset
from xtalnb.utils import source_root

N_SUBSET, STEPS = 2000, 2400

def train_c_mled(name: str = "denovo-mp20-adapter-C-MLED", base: str = "denovo-mp20", budget: float = 720.0) -> dict:
    cache = source_root() / "data" / "labels" / "m_led_train.csv"
    train = load_dataset("mp20_subset", "train", progress=False)
    idx = np.sort(np.random.default_rng(0).choice(len(train), N_SUBSET, replace=False))
    subset = [train[i] for i in idx]
    t0 = time.time()
    attach_conditions(subset, ["m_led"], m_led_cache=cache, progress=False)     # labels (cached, resumable)
    print(f"M_LED labels for {N_SUBSET} crystals: {time.time() - t0:.0f} s", flush=True)
    return finetune_conditional(name, ["compactness", "m_led"], base=base, train_set=subset, steps=STEPS, lr=1e-3, batch_size=32,
                                p_uncond=0.2, time_budget_s=budget, m_led_cache=cache, progress=False)

if __name__ == "__main__":
    torch.set_num_threads(1)
    a = sys.argv[1:]
    res = train_c_mled(*(a[2:3] or ["denovo-mp20-adapter-C-MLED"]), *(a[1:2] or ["denovo-mp20"]),
                       float(a[0]) if a else 720.0)
    print({k: v for k, v in res.items() if k != "card"}, flush=True)
