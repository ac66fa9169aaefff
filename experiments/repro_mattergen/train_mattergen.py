"""Produced: the checkpoint denovo-mp20-mattergen (data/checkpoints/), used by nbs/repro/mattergen_sun.ipynb and pigen_tables.ipynb.

Train the MatterGen-family de novo model `denovo-mp20-mattergen` at equal compute to `denovo-mp20`.

Same Denoiser size (hidden 256, 4 layers), same data (mp20_subset train), batch 64, lr schedule (cosine over 60k steps,
500 warm-up), EMA 0.999 and seed as `denovo-mp20`; stopped at `EQUAL_STEPS` (2,843 steps, the committed intermediate
denovo-mp20 of git 3854612, 0.5 CPU-hour) or at a wall deadline, whichever comes first. Family differences: D3PM absorbing atom types (token input,
logit output, λ_CE = 0.01, loss weight 1.0 as in MatterGen), symmetric lattice VP with the MatterGen limit, σ_T = 5
coordinates. Resumable: rerun the same command; state lives in $XTALNB_RUNS/denovo-mp20-mattergen (default ~/.cache/xtalnb/runs).
Usage: OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/repro_mattergen/train_mattergen.py [deadline_unix_s]
"""
import sys
import time

import torch

from xtalnb import train as T

NAME = "denovo-mp20-mattergen"
T.DEFAULT_MODELS[NAME] = {
    "task": "denovo", "family": "mattergen",
    "model": dict(T.DEFAULT_MODELS["denovo-mp20"]["model"]),
    "train": {**T.DEFAULT_MODELS["denovo-mp20"]["train"], "loss_weights": {"lattice": 1.0, "frac": 1.0, "types": 1.0}}}
EQUAL_STEPS = 2843   # = the committed denovo-mp20 version 3854612 (0.50 h); the shipped one has 5961 steps

if __name__ == "__main__":
    torch.set_num_threads(1)
    deadline = float(sys.argv[1]) if len(sys.argv) > 1 else None
    hours = None if deadline is None else max(0.0, deadline - time.time()) / 3600
    res = T.train_default(NAME, hours=hours, until_step=EQUAL_STEPS, threads=1, progress=False, export_every_s=600)
    print({k: v for k, v in res.items() if k != "ema"}, flush=True)
