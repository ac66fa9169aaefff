"""Produced: the mae_surrogate* columns of the first evaluation's results/dos/eval_*.csv (the xTB columns are untouched).
Reproduce: the command below.

Re-score the stored candidates of the first evaluation (eval_masked_g2/g0/classifier, eval_fixed_<El>_g2) with the current
dos-surrogate (retrained on all 408 labels): the columns mae_surrogate_vs_target(_pred) get the new surrogate's values, the first
surrogate's values (134 training structures) are kept once in mae_surrogate134_vs_target(_pred). The xTB columns are untouched.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python experiments/dos/rescore_surrogate.py
"""
from pathlib import Path

import numpy as np
import pandas as pd

from xtalnb.checkpoint import load_model
from xtalnb.crystal import Crystal
from xtalnb.dosgen import load_target
from xtalnb.utils import atomic_write_text

OUT = Path("results/dos")
y, _, au3ni, _ = load_target("Au3Ni_L12_Ni")
sur, _, card = load_model("dos-surrogate")
y_hat = sur.predict([au3ni])[0][0]
for tag in ["masked_g2", "masked_g0", "masked_classifier"] + [f"fixed_{el}_g2" for el in ("Ti", "Co", "Cu", "Pd")]:
    ev, a = pd.read_csv(OUT / f"eval_{tag}.csv"), np.load(OUT / f"eval_{tag}.npz", allow_pickle=True)
    off = np.concatenate([[0], np.cumsum(a["num_atoms"])])
    cs = [Crystal(a["atomic_numbers"][off[i]:off[i + 1]], a["frac_coords"][off[i]:off[i + 1]], a["lattice"][i]) for i in range(len(off) - 1)]
    assert len(cs) == len(ev) and all(c.num_atoms == n for c, n in zip(cs, ev.n_atoms))
    pred = [p[0] for p in sur.predict(cs)]
    if "mae_surrogate134_vs_target" not in ev:
        ev.insert(ev.columns.get_loc("mae_surrogate_vs_target"), "mae_surrogate134_vs_target", ev.mae_surrogate_vs_target)
        ev.insert(ev.columns.get_loc("mae_surrogate_vs_target_pred"), "mae_surrogate134_vs_target_pred", ev.mae_surrogate_vs_target_pred)
    ev["mae_surrogate_vs_target"] = [float(np.abs(p - y).mean()) for p in pred]
    ev["mae_surrogate_vs_target_pred"] = [float(np.abs(p - y_hat).mean()) for p in pred]
    atomic_write_text(ev.to_csv(index=False), OUT / f"eval_{tag}.csv")
    print(f"{tag}: surrogate MAE vs y {ev.mae_surrogate134_vs_target.mean():.3f} (134-structure surrogate) -> {ev.mae_surrogate_vs_target.mean():.3f}")
