"""MatterGen | (M_LED, C) row of the PIGEN tables: the same joint (compactness, M_LED) adapter fine-tune as
data/conditional_shift/run_c_mled.py (same 2,000-crystal random subset of the MP-20 train split, seed 0, cached M_LED labels,
2,400 steps x 32, lr 1e-3, p_uncond 0.2), but on the MatterGen-family base `denovo-mp20-mattergen` (2,843 steps).
Resumable: rerun the same command; training state lives in the runs dir.
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../data/repro/pigen_tables/finetune_mattergen_c_mled.py [wall_budget_s] &"""
import sys, time
import numpy as np
import torch
from xtalnb.data import load_dataset, project_root
from xtalnb.conditional import attach_conditions, finetune_conditional

NAME, BASE, N_SUBSET, STEPS = "denovo-mp20-mattergen-adapter-C-MLED", "denovo-mp20-mattergen", 2000, 2400

if __name__ == "__main__":
    torch.set_num_threads(1)
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 720.0
    cache = project_root() / "data" / "conditional_shift" / "m_led_train.csv"
    train = load_dataset("mp20_subset", "train", progress=False)
    idx = np.sort(np.random.default_rng(0).choice(len(train), N_SUBSET, replace=False))
    subset = [train[i] for i in idx]
    t0 = time.time()
    attach_conditions(subset, ["m_led"], m_led_cache=cache, progress=False)
    print(f"M_LED labels for {N_SUBSET} crystals: {time.time() - t0:.0f} s", flush=True)
    res = finetune_conditional(NAME, ["compactness", "m_led"], base=BASE, train_set=subset, steps=STEPS, lr=1e-3, batch_size=32,
                               p_uncond=0.2, time_budget_s=budget, m_led_cache=cache, progress=False)
    print({k: v for k, v in res.items() if k != "card"}, flush=True)
