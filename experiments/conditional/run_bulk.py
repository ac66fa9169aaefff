"""Produced: the checkpoint denovo-mp20-adapter-bulk (data/checkpoints/).

Bulk modulus at CPU scale: adapter fine-tune of denovo-mp20 on the AFLOW elastic set's bulk-modulus train split (a different
dataset from MP-20: AFLOW relaxations and AEL-AGL moduli), cells of at most 20 atoms (the base model's range).
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../experiments/conditional/run_bulk.py [wall_budget_s] &"""
import sys

import torch

torch.set_num_threads(1)
from xtalnb.conditional import finetune_conditional
from xtalnb.data import load_dataset

NAME, STEPS = "denovo-mp20-adapter-bulk", 2400
budget = float(sys.argv[1]) if len(sys.argv) > 1 else 720.0
train = [c for c in load_dataset("aflow_bulk_modulus", "train", progress=False) if c.num_atoms <= 20]
print(f"AFLOW bulk-modulus train crystals with <= 20 atoms: {len(train)}", flush=True)
res = finetune_conditional(NAME, ["bulk_modulus"], train_set=train, steps=STEPS, lr=1e-3, batch_size=32, p_uncond=0.2,
                           time_budget_s=budget, progress=False, data_desc="AFLOW elastic bulk-modulus train split, cells <= 20 atoms")
print({k: v for k, v in res.items() if k != "card"}, flush=True)
