"""Training loop: a run killed with SIGKILL resumes exactly; 2-process DDP (gloo) follows the 1-process loss curve."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

HERE = Path(__file__).parent
PY = sys.executable


def _run(args, **kw):
    return subprocess.run([PY, str(HERE / "_train_toy.py"), *map(str, args)], check=True, capture_output=True, text=True,
                          timeout=300, **kw)


def _state(d):
    return torch.load(Path(d) / "state.pt", weights_only=False)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run([ref, 12, "denovo"])
    p = subprocess.Popen([PY, str(HERE / "_train_toy.py"), str(killed), "12", "denovo", "0.15"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 120:  # wait for the first checkpoint (step 3 or 6), then kill without warning
        if (killed / "state.pt").exists() and _state(killed)["step"] >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    st = _state(killed)
    assert 3 <= st["step"] < 12, st["step"]          # really killed mid-way
    _run([killed, 12, "denovo"])                   # resume
    a, b = _state(ref), _state(killed)
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["step"], sb["step"])
    la, lb = pd.read_csv(ref / "log.csv"), pd.read_csv(killed / "log.csv")
    assert la.step.tolist() == lb.step.tolist() == list(range(1, 13))   # no duplicated or missing rows
    assert (la.loss.values == lb.loss.values).all()


def test_ddp_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([one, 6, "csp"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(HERE / "_train_toy.py"), str(two), "6", "csp"], check=True, capture_output=True, text=True,
                   timeout=300, env=env)
    l1, l2 = pd.read_csv(one / "log.csv"), pd.read_csv(two / "log.csv")
    assert l1.step.tolist() == l2.step.tolist() == list(range(1, 7))
    for col in ("loss", "loss_lattice", "loss_frac"):
        assert ((l1[col] - l2[col]).abs() <= 1e-4 * (1 + l1[col].abs())).all(), (col, l1[col].values, l2[col].values)
    a, b = _state(one), _state(two)
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5), k


# ---- per-atom conditions (DOSMatGen's per-atom DOS) in the one training loop --------------------------------------------------------
def _toy_atom_cond(n=16, D=6, seed=0):
    import dataclasses

    import numpy as np

    from xtalnb.crystal import Crystal
    rng = np.random.default_rng(seed)
    return [dataclasses.replace(Crystal(rng.integers(1, 30, k), rng.random((k, 3)), np.diag(rng.uniform(3, 5, 3))),
                                atom_props={"d": rng.random((k, D)).astype(np.float32)}) for k in rng.integers(1, 6, n)]


class _Spy(torch.nn.Module):
    "Passes every call on to the model and records its arguments."
    def __init__(self, m):
        super().__init__()
        self.m, self.config, self.seen = m, m.config, []

    def forward(self, *a, **k):
        self.seen.append((a, k))
        return self.m(*a, **k)


def test_atom_condition_dropout_rates_and_dropped_rows_carry_nothing(one_thread):
    """Monte Carlo: the fraction of dropped atom rows is 1 - (1 - p_uncond)(1 - p_atom_uncond); p_uncond alone drops whole crystals;
    the model sees atom_props / scale; a dropped row's values have no effect (it is the null embedding, as an unconditioned NaN row)."""
    import dataclasses

    from xtalnb.crystal import CrystalBatch
    from xtalnb.denoiser import Denoiser
    from xtalnb.diffusion import CrystalDiffusion
    from xtalnb.train import TrainConfig, step_losses
    torch.manual_seed(0)
    model = Denoiser(hidden=16, layers=1, num_freqs=2, time_dim=8, atom_cond_dim=6).eval()
    diff = CrystalDiffusion("diffcsp", n_mc=1000)
    b = CrystalBatch.from_crystals(_toy_atom_cond())
    B, N, S = b.num_graphs, b.batch.shape[0], 150
    for p, q in [(0.3, 0.0), (0.0, 0.5), (0.3, 0.5)]:
        spy = _Spy(model)
        cfg = TrainConfig(atom_cond_key="d", atom_cond_scale=3.0, p_uncond=p, p_atom_uncond=q)
        with torch.no_grad():
            for s in range(S):
                step_losses(spy, diff, b, s, cfg)
        drops = torch.stack([k["drop"]["atom_cond"] for _, k in spy.seen]).float()          # (S, N)
        expected = 1 - (1 - p) * (1 - q)
        tol = 5 * (expected * (1 - expected) / (S * B)) ** 0.5        # conservative: atoms of one crystal are correlated through p
        assert abs(drops.mean().item() - expected) < tol, (p, q, drops.mean().item(), expected)
        if q == 0:                                                    # whole crystals only
            for i in range(B):
                col = drops[:, b.batch == i]
                assert (col == col[:, :1]).all()
        for _, k in spy.seen[:3]:
            torch.testing.assert_close(k["atom_cond"], b.atom_props["d"] / 3.0, rtol=0, atol=0)
    # the dropped rows carry nothing: garbage in them, or NaN (= unconditioned at sampling) without a drop mask, gives the same output
    with torch.no_grad():
        model.atom_cond_null.normal_(0, 1.0)
        a, k = spy.seen[-1]
        d = k["drop"]["atom_cond"]
        assert 0 < d.sum() < N
        ref = model(*a, **k)
        garbage = torch.where(d[:, None], torch.randn_like(k["atom_cond"]) * 100, k["atom_cond"])
        nan_rows = torch.where(d[:, None], torch.full_like(k["atom_cond"], float("nan")), k["atom_cond"])
        kept = k["atom_cond"].clone(); kept[(~d).nonzero()[0, 0]] += 1.0
        for variant in (dict(k, atom_cond=garbage), dict(k, atom_cond=nan_rows, drop={})):
            out = model(*a, **variant)
            for f in ref:
                torch.testing.assert_close(out[f], ref[f])
        assert (model(*a, **dict(k, atom_cond=kept))["frac"] - ref["frac"]).abs().max() > 1e-6   # a kept row does act
    with pytest.raises(ValueError, match="not in the batch's atom_props"):
        step_losses(model, diff, CrystalBatch.from_crystals([dataclasses.replace(c, atom_props={}) for c in _toy_atom_cond(2)]), 0,
                    TrainConfig(atom_cond_key="d"))


def test_atom_condition_run_resumes_exactly(tmp_path, one_thread):
    "A run with a per-atom condition stopped at step 5 and resumed to 10 equals the uninterrupted 10-step run; the condition is learned."
    from xtalnb.denoiser import Denoiser
    from xtalnb.diffusion import CrystalDiffusion
    from xtalnb.train import TrainConfig, train
    diff = CrystalDiffusion("diffcsp", n_mc=1000)
    data = _toy_atom_cond()

    def tiny():
        torch.manual_seed(0)
        return Denoiser(hidden=16, layers=1, num_freqs=2, time_dim=8, atom_cond_dim=6)
    cfg = TrainConfig(steps=10, batch_size=4, log_every=1, ckpt_every=5, warmup_steps=2, atom_cond_key="d", atom_cond_scale=2.0,
                      p_uncond=0.2, p_atom_uncond=0.3)
    ma = tiny(); train(ma, diff, data, None, cfg, tmp_path / "a", progress=False)
    mb = tiny(); train(mb, diff, data, None, cfg, tmp_path / "b", until_step=5, progress=False)
    mb = tiny(); rb = train(mb, diff, data, None, cfg, tmp_path / "b", progress=False)
    assert rb["step"] == 10
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(ma.atom_cond_proj.weight, tiny().atom_cond_proj.weight)
    la, lb = pd.read_csv(tmp_path / "a" / "log.csv"), pd.read_csv(tmp_path / "b" / "log.csv")
    assert la.step.tolist() == lb.step.tolist() == list(range(1, 11)) and (la.loss.values == lb.loss.values).all()
