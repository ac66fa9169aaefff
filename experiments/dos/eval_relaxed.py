"""Produced: results/dos/eval_<tag>_relaxed.csv/.npz (read by nbs/15_dos_generation.ipynb and nbs/repro/dosmatgen.ipynb).
Reproduce: the command below (the tags experiments/dos/run_final.sh passes for a snapshot).

Relax-then-check for stored constrained-generation evaluations (DOSMatGen's workflow relaxes candidates before judging them).

For each tag, the candidates of results/dos/eval_<tag>.csv/.npz are CHGNet-relaxed (FIRE, fmax 0.1 eV/Å, ≤ 200 steps, 120 s) and
re-evaluated with `evaluate_candidates(..., relax=True)`: surrogate on the relaxed structure, CHGNet E_form, and GFN1-xTB (same
label settings, 7 Å rule, supercell ≤ 80 atoms) for the rows that had an xTB result before relaxation, so that the unrelaxed and
relaxed xTB MAE are paired. Writes results/dos/eval_<tag>_relaxed.csv/.npz (relaxed structures; readable with `load_eval`) and
skips finished tags.

    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/eval_relaxed.py masked_g2 masked_g0 > results/dos/logs/eval_relaxed.log 2>&1 &
"""
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xtalnb.checkpoint import load_model
from xtalnb.dosgen import evaluate_candidates, load_eval, load_target
from xtalnb.utils import atomic_write, atomic_write_text

OUT = Path("results/dos")
y, _, au3ni, _ = load_target("Au3Ni_L12_Ni")
sur = load_model("dos-surrogate")[0]
y_hat = sur.predict([au3ni])[0][0]

def run(tag):
    p = OUT / f"eval_{tag}_relaxed.csv"
    if p.exists(): print(f"{tag}: cached", flush=True); return
    t0 = time.time()
    ev0, cs, _, _ = load_eval(tag, OUT)
    parts = [evaluate_candidates([c], y, sur, target_pred=y_hat, xtb=ev0.xtb_status[i] == "ok", min_length=7.0, max_super_atoms=80,
                                 relax=True) for i, c in enumerate(cs)]
    ev = pd.concat(parts, ignore_index=True)
    ev.loc[ev0.xtb_status != "ok", "xtb_status"] = "not run (no unrelaxed xTB result)"
    if "mae_xtb_vs_target" not in ev: ev["mae_xtb_vs_target"] = np.nan      # no candidate had an xTB result
    ev["mae_xtb_vs_target_unrelaxed"] = ev0.mae_xtb_vs_target.values
    ev["mae_surrogate_vs_target_unrelaxed"] = ev0.mae_surrogate_vs_target.values
    relaxed = [r if hasattr(r, "lattice") else c for r, c in zip(ev.pop("relaxed_crystal"), cs)] \
        if "relaxed_crystal" in ev else list(cs)
    nan = np.full(400, np.nan)
    dos = np.stack([d if isinstance(d, np.ndarray) else nan for d in ev.pop("xtb_dos_site")]) if "xtb_dos_site" in ev else np.tile(nan, (len(cs), 1))
    pred = np.stack([q[0] for q in sur.predict(relaxed)])
    ev["tag"] = f"{tag}_relaxed"
    arrays = {"xtb_dos_site0": dos, "surrogate_dos_site0": pred, "atomic_numbers": np.concatenate([c.atomic_numbers for c in relaxed]),
                  "num_atoms": np.array([c.num_atoms for c in relaxed]), "frac_coords": np.concatenate([c.frac_coords for c in relaxed]),
                  "lattice": np.stack([c.lattice for c in relaxed]), "relaxed": np.array([s in ("converged", "unconverged") for s in ev.relax_status])}
    def w(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    atomic_write(OUT / f"eval_{tag}_relaxed.npz", w)
    atomic_write_text(ev.to_csv(index=False), p)
    cols = ["formula", "relax_status", "relax_steps", "relax_volume_ratio", "e_form_per_atom", "mae_xtb_vs_target_unrelaxed", "mae_xtb_vs_target",
            "xtb_status"]
    print(f"{tag}: {len(cs)} candidates, {time.time() - t0:.0f} s\n{ev[[c for c in cols if c in ev]].to_string()}", flush=True)

if __name__ == "__main__":
    for tag in sys.argv[1:]:
        run(tag)
