"""One training-throughput measurement, printed as one JSON line (rank 0). Used by train_speed.ipynb.

    python nbs/benchmarks/train_bench.py --mode model --threads 1          # model only: one fixed batch, step after step
    python nbs/benchmarks/train_bench.py --mode loop --threads 2           # the real loop: xtalnb.train.train
    torchrun --nproc_per_node=2 nbs/benchmarks/train_bench.py --mode loop  # the real loop, DDP over 2 gloo ranks
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import numpy as np
import torch

from xtalnb.crystal import CrystalBatch
from xtalnb.data import load_dataset
from xtalnb.train import (
    batch_indices,
    build_from_spec,
    init_distributed,
    model_spec,
    step_losses,
    train,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["model", "loop"], required=True)
    ap.add_argument("--task", default="denovo")
    ap.add_argument("--family", default="diffcsp")
    ap.add_argument("--size", default="256x4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--val-every", type=int, default=2000)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--compile", action="store_true", help="model only: torch.compile (inductor, dynamic shapes) each layer")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    spec = model_spec(a.task, a.family, a.size)
    model, diffusion, cfg = build_from_spec(spec)
    data = load_dataset("mp_20", "train", progress=False)
    B = cfg.batch_size
    if a.mode == "model":
        if a.compile:
            for layer in model.layers:
                layer.forward = torch.compile(layer.forward, dynamic=True)
        batches = [CrystalBatch.from_crystals([data[int(i)] for i in batch_indices(len(data), B, cfg.seed, k)]) for k in range(4)]
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        ts = []
        for s in range(a.steps):
            t0 = time.perf_counter()
            loss, _ = step_losses(model, diffusion, batches[s % len(batches)], s, cfg, task=a.task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ts.append(time.perf_counter() - t0)
        ts = np.array(ts[8 if a.compile else 3:])   # compilation happens in the first steps
        out = {"mode": "model-compiled" if a.compile else "model", "world": 1, "crystals_per_s": B / float(np.median(ts)), "step_ms_median": 1e3 * float(np.median(ts)),
                   "step_ms_min": 1e3 * float(ts.min()), "step_ms_max": 1e3 * float(ts.max())}
    else:
        rank, world = init_distributed("cpu")
        val = load_dataset("mp_20", "val", progress=False)[: cfg.val_size]
        cfg = dataclasses.replace(cfg, steps=a.steps, val_every=a.val_every, ckpt_every=a.ckpt_every)
        run = tempfile.mkdtemp(prefix="xtalnb-bench-") if rank == 0 else None
        if world > 1:
            import torch.distributed as dist
            box = [run]
            dist.broadcast_object_list(box, src=0)
            run = box[0]
        t0, c0 = time.perf_counter(), time.process_time()
        res = train(model, diffusion, data, val, cfg, run, task=a.task, resume=False, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out = {"mode": "loop", "world": world, "crystals_per_s": res["step"] * B / wall, "wall_s": wall, "cpu_s_rank0": cpu,
                   "steps": res["step"], "val_every": a.val_every, "ckpt_every": a.ckpt_every}
        if rank != 0:
            return
    out.update(task=a.task, family=a.family, size=a.size, threads=a.threads, batch=B, steps_run=a.steps)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
