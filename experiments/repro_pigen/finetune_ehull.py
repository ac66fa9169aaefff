"""Produced: the checkpoint denovo-mp20-adapter-ehull (data/checkpoints/), a row of nbs/repro/pigen_tables.ipynb.

CFG on E_hull at CPU scale (PIGEN's "PIGEN | E_hull = 0" row): adapter fine-tune of the shipped `denovo-mp20` on the MP-20 CSV
column `e_above_hull` (Materials Project's DFT value, eV/atom, as read by xtalnb.data), exported as
data/checkpoints/denovo-mp20-adapter-ehull. Same recipe as denovo-mp20-adapter-C (adapter mode: base frozen, zero-initialised
adapters; batch 32, lr 1e-3 -> 1e-4, condition dropout 0.2 for classifier-free guidance, seed 0), fewer steps (STEPS).
Resumable: state in $XTALNB_RUNS/denovo-mp20-adapter-ehull (default ~/.cache/xtalnb/runs); rerun the same command.

Usage: OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/repro_pigen/finetune_ehull.py [time_budget_s]
"""
import json
import sys
import time

import torch

from xtalnb.conditional import finetune_conditional

NAME, STEPS = "denovo-mp20-adapter-ehull", 1500

if __name__ == "__main__":
    torch.set_num_threads(1)
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else None
    t0 = time.time()
    res = finetune_conditional(NAME, ["e_above_hull"], base="denovo-mp20", mode="adapter", steps=STEPS, batch_size=32, lr=1e-3,
                               p_uncond=0.2, time_budget_s=budget, seed=0, progress=False, export=True,
                               log_every=20, ckpt_every=100)
    if not res["done"]:        # an intermediate export is overwritten by the next call; say so
        print("not finished: rerun to continue", flush=True)
    print(json.dumps({k: v for k, v in res.items() if k != "card"}), f"sha256 {res['card']['sha256'][:12]}",
          f"wall {time.time() - t0:.0f}s", flush=True)
