"""Toy training run used by tests/test_train.py (run as a script, also under torchrun)."""
import sys

import numpy as np
import torch

from xtalnb.crystal import Crystal
from xtalnb.denoiser import Denoiser
from xtalnb.diffusion import CrystalDiffusion
from xtalnb.train import TrainConfig, train


def toy_crystals(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return [Crystal(rng.integers(1, 30, k), rng.random((k, 3)), np.diag(rng.uniform(3, 5, 3)))
            for k in rng.integers(1, 6, n)]


def main(run_dir, steps, task="denovo", slow=0.0):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Denoiser(hidden=16, layers=1, num_freqs=2, time_dim=8)
    if slow:  # make each step take a while so the test can kill the process mid-run
        orig = model.forward
        def forward(*a, **k):
            import time
            time.sleep(slow)
            return orig(*a, **k)
        model.forward = forward
    cfg = TrainConfig(steps=steps, batch_size=8, log_every=1, val_every=10**6, ckpt_every=3, warmup_steps=2)
    train(model, CrystalDiffusion("diffcsp", n_mc=1000), toy_crystals(), None, cfg, run_dir, task=task, progress=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
