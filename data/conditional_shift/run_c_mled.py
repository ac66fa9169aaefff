"""Joint PIGEN conditioning (C, M_LED): adapter fine-tune of denovo-mp20 on a random 2,000-crystal subset of the MP-20 train split.
Resumable: M_LED labels are cached in data/conditional_shift/m_led_train.csv, training state in the runs dir.
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../data/conditional_shift/run_c_mled.py [wall_budget_s] &"""
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from xtalnb.data import load_dataset, project_root
from xtalnb.conditional import attach_conditions, finetune_conditional

NAME, N_SUBSET, STEPS = "denovo-mp20-adapter-C-MLED", 2000, 2400
budget = float(sys.argv[1]) if len(sys.argv) > 1 else 720.0
cache = project_root() / "data" / "conditional_shift" / "m_led_train.csv"
train = load_dataset("mp20_subset", "train", progress=False)
idx = np.sort(np.random.default_rng(0).choice(len(train), N_SUBSET, replace=False))
subset = [train[i] for i in idx]
t0 = time.time()
attach_conditions(subset, ["m_led"], m_led_cache=cache, progress=False)     # labels (cached, resumable)
print(f"M_LED labels for {N_SUBSET} crystals: {time.time() - t0:.0f} s", flush=True)
res = finetune_conditional(NAME, ["compactness", "m_led"], train_set=subset, steps=STEPS, lr=1e-3, batch_size=32, p_uncond=0.2,
                           time_budget_s=budget, m_led_cache=cache, progress=False)
print({k: v for k, v in res.items() if k != "card"}, flush=True)
