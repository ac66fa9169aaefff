"""Produced: results/dos/eval_masked_g2_s1 / g0_s1 / fixed_<El>_g2_s2 (.csv/.npz), read by nbs/15_dos_generation.ipynb.
Reproduce: the command below.

More candidates for DOSMatGen 3.2.1 (masked generation, N ∈ {4,5,6,7}) and 3.2.3 (fixed atom type Ti/Co/Cu/Pd), each recomputed with
GFN1-xTB like eval_dosgen.py (7 Å rule; a supercell > 80 atoms is recorded as too large and costs nothing). Same model, target and
100-step sampler as eval_dosgen.py, new seeds:
  masked_g2_s1 / masked_g0_s1: N = 4, 5, 6, 7 twice each, γ = 2 and γ = 0 (same seed = same atom counts and noise), seed 1;
  fixed_<El>_g2_s2: N = 4, 5, 6, 7 twice each, atom 0 fixed to El, γ = 2, seed 2 (the same noise for the four elements).
CPU budget: per tag only the `K` cheapest candidates (smallest 7 Å supercell ≤ 80 atoms; masked: the K cheapest per N) get xTB,
the others are recorded as "not run (budget)". Resumable: a finished tag (results/dos/eval_<tag>.csv) is skipped.

    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/eval_more.py fixed masked > results/dos/logs/eval_more.log 2>&1 &

`complete <tag> ...` later runs xTB on the rows of finished tags that were "not run (budget)" (same settings; csv and npz updated).
"""
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xtalnb.checkpoint import load_model
from xtalnb.dos import supercell_repeats
from xtalnb.dosgen import dos_generate, evaluate_candidates, load_target

OUT = Path("results/dos")
y, _, au3ni, _ = load_target("Au3Ni_L12_Ni")
gen = load_model("dos-denovo-mp20")
sur = load_model("dos-surrogate")[0]
y_hat = sur.predict([au3ni])[0][0]
NUMS = [4, 5, 6, 7] * 2

def n_super(c):
    return c.num_atoms * int(np.prod(supercell_repeats(c.lattice, 7.0)))

def run(tag, k, per_n=False, **kw):
    p = OUT / f"eval_{tag}.csv"
    if p.exists(): print(f"{tag}: cached", flush=True); return
    t0 = time.time()
    cs = dos_generate(gen, y, steps=100, **kw)
    t_gen = time.time() - t0
    size = np.array([n_super(c) for c in cs])
    groups = [np.array([i for i, c in enumerate(cs) if c.num_atoms == n]) for n in sorted({c.num_atoms for c in cs})] if per_n else [np.arange(len(cs))]
    chosen = {int(i) for g in groups for i in g[np.argsort(size[g], kind="stable")][:k] if size[i] <= 80}
    parts = [evaluate_candidates([c], y, sur, target_pred=y_hat, xtb=i in chosen, min_length=7.0, max_super_atoms=80) for i, c in enumerate(cs)]
    ev = pd.concat(parts, ignore_index=True)
    ev["supercell_atoms"] = size
    skip = [i for i in range(len(cs)) if i not in chosen]
    ev.loc[skip, "xtb_status"] = [f"not run: supercell {size[i]} atoms > 80" if size[i] > 80 else "not run (budget)" for i in skip]
    ev.loc[skip, "mae_xtb_vs_target"] = np.nan
    dos = np.stack([d if isinstance(d, np.ndarray) else np.full(400, np.nan) for d in ev.pop("xtb_dos_site")]) if "xtb_dos_site" in ev else np.full((len(cs), 400), np.nan)
    pred = np.stack([q[0] for q in sur.predict(cs)])
    ev["tag"], ev["gen_seconds"] = tag, t_gen
    np.savez_compressed(OUT / f"eval_{tag}.npz", xtb_dos_site0=dos, surrogate_dos_site0=pred,
                        atomic_numbers=np.concatenate([c.atomic_numbers for c in cs]), num_atoms=np.array([c.num_atoms for c in cs]),
                        frac_coords=np.concatenate([c.frac_coords for c in cs]), lattice=np.stack([c.lattice for c in cs]))
    ev.to_csv(p, index=False)
    print(f"{tag}: {len(cs)} crystals ({len(cs.failed)} degenerate), sampling {t_gen:.0f} s, total {time.time() - t0:.0f} s\n"
          f"{ev.drop(columns=['tag']).to_string()}", flush=True)

if "fixed" in sys.argv[1:]:
    for el in ("Ti", "Co", "Cu", "Pd"):
        run(f"fixed_{el}_g2_s2", 4, num_atoms=NUMS, gamma=2.0, fix_sites={0: el}, seed=2)
if "masked" in sys.argv[1:]:
    for g in (2.0, 0.0):
        run(f"masked_g{g:g}_s1", 2, per_n=True, num_atoms=NUMS, gamma=g, seed=1)

def complete(tag):
    from xtalnb.dosgen import load_eval
    from xtalnb.utils import atomic_write_text
    p = OUT / f"eval_{tag}.csv"
    ev, cs, _xd, _ = load_eval(tag, OUT)
    a = dict(np.load(OUT / f"eval_{tag}.npz", allow_pickle=True))
    todo = ev.index[ev.xtb_status == "not run (budget)"].tolist()
    for i in todo:
        t0 = time.time()
        r = evaluate_candidates([cs[i]], y, None, xtb=True, min_length=7.0, max_super_atoms=80).iloc[0]
        for k in ("mae_xtb_vs_target", "xtb_status", "xtb_n_super", "xtb_gap", "xtb_seconds"):
            ev.loc[i, k] = r.get(k, np.nan)
        if r.xtb_status == "ok": a["xtb_dos_site0"][i] = r.xtb_dos_site
        print(f"{tag} #{i} {ev.formula[i]}: {str(r.xtb_status)[:60]} MAE {r.mae_xtb_vs_target:.3f} ({time.time() - t0:.0f} s)", flush=True)
        def w(tmp):
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **a)
        from xtalnb.utils import atomic_write
        atomic_write(OUT / f"eval_{tag}.npz", w)
        atomic_write_text(ev.to_csv(index=False), p)

if "complete" in sys.argv[1:]:
    for tag in sys.argv[sys.argv.index("complete") + 1:]:
        complete(tag)
