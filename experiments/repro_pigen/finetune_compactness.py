"""Produced: the checkpoints denovo-mp20-ft-compactness and denovo-mp20-ft-control (data/checkpoints/), rows of
nbs/repro/pigen_tables.ipynb; training logs results/repro/pigen_tables/train_log_ft-*.csv.

PIGEN Eq. (3) at CPU scale: continue training the shipped `denovo-mp20` with the compactness loss, and a control arm without it.

Two arms, identical except λ_C (TrainConfig.compactness_weight):
  compactness -> data/checkpoints/denovo-mp20-ft-compactness   (λ_C = LAMBDA_C below)
  control     -> data/checkpoints/denovo-mp20-ft-control       (λ_C = 0: the same extra compute without the loss)
Both start from the shipped denovo-mp20 weights (its EMA weights, 5,961 steps) with a fresh AdamW, run STEPS optimiser steps with
the same data order, noise (seed 0), batch 64, loss weights, learning-rate schedule and EMA, through `xtalnb.train.train`, and
export their EMA weights with a model card. Resumable: state in $XTALNB_RUNS/<name> (default ~/.cache/xtalnb/runs/<name>);
rerun the same command to continue.

Choice of λ_C (PIGEN gives no value, only "rescaled for balanced gradient magnitudes"): at the shipped weights the gradient norm
of the base loss is 1.7-3.8 per batch while that of the compactness term at λ_C = 1 is 2e5-3e8 (8 batches of 64; heavy-tailed
because x̂_0 of high-noise steps can have a near-singular lattice, so C(x̂_0) explodes). λ_C = 1e-6 puts the median batch's
compactness gradient (~1) at the scale of the base gradient (~2.5); outlier batches are bounded by the gradient clip (1.0).

Usage: OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/repro_pigen/finetune_compactness.py ARM [time_budget_s]
"""
import dataclasses
import json
import sys
import time

import torch

from xtalnb.checkpoint import checkpoint_dir, load_model, save_model
from xtalnb.data import load_dataset
from xtalnb.train import TrainConfig, default_run_dir, train

BASE = "denovo-mp20"
STEPS = 500            # fine-tuning steps per arm (equal compute: same steps, batch and data for both arms)
LAMBDA_C = 1e-6
ARMS = {"compactness": LAMBDA_C, "control": 0.0}


def config(lam: float, base_card: dict) -> TrainConfig:
    tc = {**base_card["train_config"]}
    tc.update(steps=STEPS, lr=1e-3, lr_min=1e-4, warmup_steps=50, ema_decay=0.995, compactness_weight=float(lam),
              log_every=10, val_every=10**9, ckpt_every=50, seed=0)
    return TrainConfig(**tc)


def run(arm: str, time_budget_s: float | None = None, device: str = "cpu") -> dict:
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {sorted(ARMS)}, got {arm!r}")
    name = f"{BASE}-ft-{arm}"
    torch.set_num_threads(1)
    net, diffusion, card = load_model(BASE, device=device)
    cfg = config(ARMS[arm], card)
    run_dir = default_run_dir(name)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_set = load_dataset("mp20_subset", "train")
    res = train(net, diffusion, train_set, None, cfg, run_dir, task="denovo", device=device, time_budget_s=time_budget_s,
                progress=False)
    out = {"arm": arm, "step": res["step"], "done": res["done"], "elapsed_s": res["elapsed_s"]}
    if res["done"]:
        st = torch.load(run_dir / "state.pt", map_location="cpu", weights_only=False)
        new = {"task": "denovo", "family": card["family"], "base_model": BASE, "base_sha256": card["sha256"],
               "base_steps": card["steps"], "finetune": f"continued training of {BASE} for {st['step']} steps, λ_C = {ARMS[arm]}",
               "compactness_weight": ARMS[arm], "data": card["data"], "steps": card["steps"] + st["step"],
               "finetune_steps": st["step"], "wall_hours": card["wall_hours"] + st["elapsed_s"] / 3600,
               "finetune_wall_hours": st["elapsed_s"] / 3600, "hardware": "CPU (2 cores, shared, nice 19, 1 thread)",
               "seed": cfg.seed, "train_config": dataclasses.asdict(cfg),
               "num_atoms_distribution": card["num_atoms_distribution"],
               "script": "experiments/repro_pigen/finetune_compactness.py"}
        out["sha256"] = save_model(checkpoint_dir() / name, net, diffusion, card=new, state_dict=st["ema"]["shadow"])["sha256"]
    return out


if __name__ == "__main__":
    arm = sys.argv[1]
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else None
    t0 = time.time()
    print(json.dumps(run(arm, budget)), f"wall {time.time() - t0:.0f}s", flush=True)
