"""Helper module (produces nothing itself).

Shared setup of diag_classifier_vpa.py and fix_classifier_vpa.py: the 05b_classifier classifier-guidance demo's model, the
4,000-crystal regressor subset and the random generator (seed 0) in the state the demo left it (the next draw is the atom counts)."""
import numpy as np

from xtalnb.checkpoint import load_model
from xtalnb.data import load_dataset

N, STEPS, TARGET = 32, 100, 30.0

def demo_setup():
    "(net, diffusion, card, train, rng, sub_idx, sub) exactly as the demo builds them."
    net, dnv, dcard = load_model("denovo-mp20")
    train = load_dataset("mp20_subset", "train", progress=False)
    rng = np.random.default_rng(0)
    sub_idx = rng.choice(len(train), 4000, replace=False)
    return net, dnv, dcard, train, rng, sub_idx, [train[int(i)] for i in sub_idx]
