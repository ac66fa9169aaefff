"""Produced: results/conditional/denovo-mp20-adapter-C-MLED.csv, denovo-mp20-adapter-magdens-hhi.csv,
denovo-mp20-adapter-bulk.csv (read by nbs/11_conditional.ipynb).

Property shift of the joint / new adapters, measured independently of the generator (results cached and resumable, re-read by
nbs/11_conditional.ipynb):  c_mled | magdens_hhi | bulk  [measure time budget, s]
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../experiments/conditional/eval_shift.py c_mled &"""
import sys
import time
import warnings

import torch

torch.set_num_threads(1)
import pandas as pd

from xtalnb.conditional import measure_shift, sample_shift
from xtalnb.utils import atomic_write_text, source_root

which = sys.argv[1]
budget = float(sys.argv[2]) if len(sys.argv) > 2 else None
root = source_root() / "results" / "conditional"
SETUPS = {   # model, targets, gammas, measures (imported lazily), max_per_group
    "c_mled": ("denovo-mp20-adapter-C-MLED", [{"compactness": 0.7, "m_led": 9.0}], (0.0, 2.0, 4.0), ("C", "M_LED"), None),
    "magdens_hhi": ("denovo-mp20-adapter-magdens-hhi", None, (0.0, 2.0, 4.0), ("HHI", "magnetic_density_chgnet"), None),
    "bulk": ("denovo-mp20-adapter-bulk", [{"bulk_modulus": 300.0}], (0.0, 2.0), ("bulk_modulus_chgnet",), 8),
}

def measures(names):
    from xtalnb.conditional import within_cell_limits
    from xtalnb.metrics import compactness, hhi, m_led
    from xtalnb.relax import bulk_modulus, magnetic_density
    allm = {"C": compactness, "M_LED": m_led, "HHI": hhi, "magnetic_density_chgnet": within_cell_limits(magnetic_density),
            "bulk_modulus_chgnet": lambda s: bulk_modulus(s, relax_first=True, max_steps=200, fmax=0.1)}
    return {k: allm[k] for k in names}

model, targets, gammas, mnames, maxg = SETUPS[which]
if which == "magdens_hhi":   # MatterGen's (0.2 μB/Å³, HHI 1250) if 0.2 lies inside the training labels' range, else their 99th percentile
    import json

    import numpy as np

    from xtalnb.checkpoint import checkpoint_dir
    lo, hi = json.loads((checkpoint_dir() / f"{model}.json").read_text())["condition_ranges"]["magnetic_density"]
    labels = pd.read_csv(source_root() / "data" / "labels" / "magdens_train.csv")["magnetic_density"].dropna()
    t_m = 0.2 if hi >= 0.2 else round(float(np.percentile(labels, 99)), 3)
    targets = [{"magnetic_density": t_m, "hhi": 1250.0}]
    print("magnetic-density target", t_m, "training range", [lo, hi], flush=True)
if which == "bulk" and len(sys.argv) > 3: maxg = int(sys.argv[3])
path = root / f"{model}.csv"
t0 = time.time()
if path.exists(): df = pd.read_csv(path)
else:
    df = sample_shift(model, targets, gammas=gammas, n=32, steps=100, seed=0)
    atomic_write_text(df.to_csv(index=False), path)
print(f"sampled {len(df)} in {time.time() - t0:.0f} s", flush=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for k, fn in measures(mnames).items():
        t1 = time.time()
        df = measure_shift(df, {k: fn}, max_per_group=maxg, time_budget_s=budget, out_path=path, flush_every=1)
        print(f"{k}: {time.time() - t1:.0f} s", flush=True)
print(df.groupby(["gamma", "target"])[[k for k in mnames]].median().to_string(), flush=True)
