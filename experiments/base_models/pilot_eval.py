"""The pilot's learning curves: every EMA snapshot of every pilot recipe measured with the yardstick's quick proxy (100-step
sampler, no relaxation), into results/base_models/pilot/yardstick.csv, then drawn against training CPU-hours.

    nice -n 19 python experiments/base_models/pilot_eval.py measure --csp-n 200 --denovo-n 500
    python experiments/base_models/pilot_eval.py plot          # figures/pilot_curves.png

Rows are resumable (the yardstick keeps finished chunks); a snapshot already in the table is skipped.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from campaign import PILOT

from xtalnb.train import default_run_dir

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "base_models" / "pilot"


def snapshots(names=None):
    "(recipe name, snapshot .pt) of every pilot snapshot on this machine, oldest first."
    out = []
    for name in names or PILOT:
        out += [(name, p) for p in sorted((default_run_dir(name) / "snapshots").glob("*.pt"))]
    return out


def measure(csp_n: int, denovo_n: int, names=None, device="cpu"):
    from xtalnb.yardstick import load_table, yardstick
    done = set(load_table(RESULTS)["sha256"]) if (RESULTS / "yardstick.csv").exists() else set()
    for name, pt in snapshots(names):
        card = json.loads(pt.with_suffix(".json").read_text())
        if card["sha256"] in done:
            continue
        n = csp_n if card["task"] == "csp" else denovo_n
        yardstick(model=pt, n=n, steps=100, relax_n=0, device=device, results_dir=RESULTS,
                  work_dir=default_run_dir("pilot-eval"), progress=False)
        print(f"{name} {pt.name}: measured", flush=True)


def plot(path=ROOT / "figures" / "pilot_curves.png"):
    import matplotlib.pyplot as plt

    from xtalnb.yardstick import load_table
    t = load_table(RESULTS)
    t["recipe"] = t["model"].str.replace(r"-cpu[0-9.]+h$", "", regex=True)
    panels = [("csp", "match_rate", "CSP match rate (100 steps)"), ("denovo", "valid", "valid (struct. + SMACT)"),
              ("denovo", "spp_pass", "passes SPP"), ("denovo", "compact_window", "inside PIGEN's C window")]
    fig, axs = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.3))
    for ax, (task, col, title) in zip(axs, panels):
        for recipe, g in t[t["task"] == task].groupby("recipe"):
            g = g.sort_values("train_cpu_hours")
            ax.plot(g["train_cpu_hours"], g[col], "o-", label=recipe.replace("pilot-", ""))
        ax.set_xlabel("training CPU-hours"); ax.set_title(title, fontsize=10); ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["measure", "plot"])
    ap.add_argument("--csp-n", type=int, default=200)
    ap.add_argument("--denovo-n", type=int, default=500)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    if a.what == "measure":
        measure(a.csp_n, a.denovo_n, a.only)
    else:
        print(plot())
