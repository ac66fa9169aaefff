"""Training loop: a run killed with SIGKILL resumes exactly; 2-process DDP (gloo) follows the 1-process loss curve."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
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
