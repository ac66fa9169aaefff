"""Produced: results/conditional/classifier_vpa_calibration.csv, classifier_vpa_diag.csv/.json, classifier_vpa_trace.csv
(read by nbs/05b_classifier.ipynb).

Why does classifier guidance to 30 Å³/atom overshoot (05b_classifier demo: median 94)? Re-creates the demo's regressor and atom
counts exactly, then (1) calibration of the regressor on clean and noised MP-20 crystals scaled to known volumes per atom,
(2) a per-step trace of the guided chain (regressor estimate f(x_t,t), volume per atom of L_t and of the denoiser's x̂_0, size of
the guidance shift against the lattice score), (3) final volume per atom for a few (scale, σ_y) settings.
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../experiments/conditional/diag_classifier_vpa.py &"""
import json
import time

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)

from vpa_demo import STEPS, TARGET, N, demo_setup

from xtalnb.classifier import ClassifierGuidance, TimeRegressor, train_regressor
from xtalnb.crystal import Crystal, CrystalBatch
from xtalnb.data import draw_num_atoms
from xtalnb.guidance import field_scores
from xtalnb.metrics import structural_validity
from xtalnb.sampling import SamplerHooks, sample
from xtalnb.utils import atomic_write_text, source_root

out_dir = source_root() / "results" / "conditional"
net, dnv, dcard, train, rng, sub_idx, sub = demo_setup()
for c in sub: c.props["vpa"] = c.volume / c.num_atoms
torch.manual_seed(0); vreg = TimeRegressor(hidden=64, layers=2, num_freqs=4)
t0 = time.time(); vl = train_regressor(vreg, dnv, sub, "vpa", steps=800, batch_size=32, lr=2e-3)
vreg.eval()
for p in vreg.parameters(): p.requires_grad_(False)
sizes = draw_num_atoms(np.asarray(dcard["num_atoms_distribution"]), N, rng)      # the demo's atom counts
y = np.array([c.props["vpa"] for c in sub])
info = {"train_s": round(time.time() - t0), "mse_last100": float(np.mean(vl[-100:])), "vpa_train_pct": np.percentile(y, [1, 50, 99, 100]).round(1).tolist(),
        "y_std": float(vreg.y_std)}
print(info, flush=True)

# (1) calibration: 64 held-out training crystals scaled isotropically to a known volume per atom, f at several t
held = [train[int(i)] for i in np.setdiff1d(np.arange(len(train)), sub_idx)[:64]]
rows = []
g = torch.Generator().manual_seed(0)
for v in (10, 20, 30, 45, 60, 90, 120):
    cs = [Crystal(c.atomic_numbers, c.frac_coords, c.lattice * (v / (c.volume / c.num_atoms)) ** (1 / 3)) for c in held]
    b = CrystalBatch.from_crystals(cs)
    for t in (1, 100, 300, 600, 900):
        tt = torch.full((len(cs),), t)
        st, _ = dnv.q_sample(b, tt, generator=g)              # t = 1: almost clean
        with torch.no_grad():
            f = vreg(st["types"], st["frac"], st["lattice"], b.num_atoms, b.batch, dnv.model_time(tt))
        rows.append({"true_vpa": v, "t": t, "f_median": float(f.median()), "f_mean": float(f.mean())})
cal = pd.DataFrame(rows); atomic_write_text(cal.to_csv(index=False), out_dir / "classifier_vpa_calibration.csv")
print(cal.pivot(index="true_vpa", columns="t", values="f_median").round(1).to_string(), flush=True)

# (2)+(3) guided chains with a tracing wrapper
class Traced(ClassifierGuidance):
    def __init__(self, *a, **k):
        super().__init__(*a, **k); self.trace = []
    def __call__(self, model_out, state, t, ctx):
        d = ctx.diffusion
        with torch.no_grad():
            f = self.regressor(state["types"], state["frac"], state["lattice"], ctx.num_atoms, ctx.batch, d.model_time(t).to(state["frac"].dtype))
        gr = self.grad_log_likelihood(state, t, ctx)
        sc = field_scores(model_out, state, t, ctx)
        L0 = d.lattice.predict_x0(state["lattice"], model_out["lattice"], t, ctx.num_atoms)
        na = ctx.num_atoms.double()
        vt = torch.linalg.det(state["lattice"].double()).abs() / na
        v0 = torch.linalg.det(L0.double()).abs() / na
        ratio = (self.scale * gr["lattice"]).flatten(1).norm(dim=1) / sc["lattice"].flatten(1).norm(dim=1).clamp_min(1e-12)
        self.trace.append({"t": int(t[0]), "f_median": float(f.median()), "vpa_xt_median": float(vt.median()), "vpa_x0hat_median": float(v0.median()),
                           "guidance_over_score_lattice_median": float(ratio.median())})
        return super().__call__(model_out, state, t, ctx)

settings = [(4.0, 1.0), (1.0, 1.0), (0.25, 1.0), (4.0, float(np.sqrt(info["mse_last100"])) * info["y_std"])]
res, traces = [], []
for s, sy in settings:
    cg = Traced(vreg, TARGET, scale=s, sigma_y=sy)
    t0 = time.time()
    out = sample(net, dnv, num_atoms=sizes, hooks=SamplerHooks(modifiers=[cg]), steps=STEPS, seed=3, progress=False)
    v = np.array([c.volume / c.num_atoms for c in out])
    with torch.no_grad():
        b = CrystalBatch.from_crystals(list(out)); t1 = torch.ones(len(out), dtype=torch.long)
        st, _ = dnv.q_sample(b, t1, generator=torch.Generator().manual_seed(0))
        f0 = vreg(st["types"], st["frac"], st["lattice"], b.num_atoms, b.batch, dnv.model_time(t1)).numpy()
    r = {"scale": s, "sigma_y": round(sy, 3), "vpa_median": float(np.median(v)), "vpa_mean": float(v.mean()), "frac_within_5": float((abs(v - TARGET) < 5).mean()),
         "f_final_median": float(np.median(f0)), "valid": float(np.mean([structural_validity(c.to_structure()) for c in out])), "seconds": round(time.time() - t0)}
    print(r, flush=True); res.append(r)
    traces += [{"scale": s, "sigma_y": round(sy, 3), **x} for x in cg.trace]
    atomic_write_text(pd.DataFrame(res).to_csv(index=False), out_dir / "classifier_vpa_diag.csv")
    atomic_write_text(pd.DataFrame(traces).to_csv(index=False), out_dir / "classifier_vpa_trace.csv")
atomic_write_text(json.dumps(info, indent=1), out_dir / "classifier_vpa_diag.json")
