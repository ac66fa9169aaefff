"""Produced: the checkpoint denovo-mp20-adapter-magdens-hhi (data/checkpoints/) and the label cache
data/labels/magdens_train.csv.

MatterGen Fig. 6 joint task at CPU scale: magnetic-density labels (CHGNet single-point magmoms at the MP-20 geometry, cached and
resumable in data/labels/magdens_train.csv) on as many MP-20 train crystals as a CPU budget allows (random order), exact
HHI, then an adapter fine-tune of denovo-mp20 on both at once.
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../experiments/conditional/run_magdens_hhi.py label|train [budget_s] &"""
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
from xtalnb.conditional import attach_conditions, finetune_conditional
from xtalnb.data import load_dataset
from xtalnb.utils import source_root

NAME, STEPS = "denovo-mp20-adapter-magdens-hhi", 2400
mode, budget = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 840.0
cache = source_root() / "data" / "labels" / "magdens_train.csv"
train = load_dataset("mp20_subset", "train", progress=False)
order = np.random.default_rng(1).permutation(len(train))
if mode == "label":           # budget = process CPU seconds for labelling (chunks of 100, each flushed to the cache)
    c0 = time.process_time()
    for k in range(0, len(order), 100):
        attach_conditions([train[i] for i in order[k:k + 100]], ["magnetic_density"], caches={"magnetic_density": cache})
        print(f"labelled {k + 100}: {time.process_time() - c0:.0f} CPU s", flush=True)
        if time.process_time() - c0 > budget: break
else:                         # budget = wall seconds of training for this call (resumable)
    import pandas as pd
    done = set(pd.read_csv(cache, dtype={"id": str})["id"])
    subset = [train[i] for i in order if str(train[i].id) in done]
    print(f"training on {len(subset)} labelled crystals", flush=True)
    res = finetune_conditional(NAME, ["magnetic_density", "hhi"], train_set=subset, steps=STEPS, lr=1e-3, batch_size=32, p_uncond=0.2,
                               time_budget_s=budget, caches={"magnetic_density": cache}, progress=False,
                               data_desc="mp20_subset train, crystals with a CHGNet single-point magnetic-density label")
    print({k: v for k, v in res.items() if k != "card"}, flush=True)
