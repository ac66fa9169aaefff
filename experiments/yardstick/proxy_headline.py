"""How well the yardstick's quick CSP proxy (100 sampler steps) tracks its headline (1000 steps).

Every CSP checkpoint given is measured on the same first `--n` compositions of the yardstick's seeded permutation of the
mp_20 test split, at 1000 and at 100 steps (rows in results/yardstick/proxy/yardstick.csv, chunks resumable), then
`xtalnb.yardstick.proxy_vs_headline` pairs them: results/yardstick/proxy/proxy_vs_headline.csv, plus the rank
correlation of the two across checkpoints (the proxy is used to rank checkpoints, so ranks are what must agree).

    nice -n 10 python experiments/yardstick/proxy_headline.py measure --n 200 csp-mp20 <snapshot.pt> ...
    python experiments/yardstick/proxy_headline.py summary
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "yardstick" / "proxy"


def measure(models, n: int, device="cpu"):
    from xtalnb.yardstick import default_work_dir, yardstick
    for m in models:
        yardstick(model=m, task="csp", n=n, steps=[1000, 100], device=device, results_dir=RESULTS,
                  work_dir=default_work_dir(), progress=False)
        print(f"{m}: measured", flush=True)


def summary():
    from scipy.stats import spearmanr

    from xtalnb.utils import atomic_write_text
    from xtalnb.yardstick import load_table, proxy_vs_headline
    pairs = proxy_vs_headline(load_table(RESULTS), metrics=("match_rate", "rmse"))
    atomic_write_text(pairs.to_csv(index=False), RESULTS / "proxy_vs_headline.csv")
    lines = []
    for metric, g in pairs.groupby("metric"):
        rho = spearmanr(g["headline"], g["proxy"]).statistic if len(g) > 2 else float("nan")
        lines.append(f"{metric}: {len(g)} checkpoints, median proxy - headline {g['difference'].median():+.3f}, "
                     f"Spearman rank correlation {rho:.2f}")
    print(pairs.to_string(index=False))
    print("\n".join(lines))
    return pairs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["measure", "summary"])
    ap.add_argument("models", nargs="*", help="shipped model names or .pt paths of CSP checkpoints")
    ap.add_argument("--n", type=int, default=200)
    a = ap.parse_intermixed_args()
    if a.what == "measure":
        measure(a.models, a.n)
    else:
        summary()
