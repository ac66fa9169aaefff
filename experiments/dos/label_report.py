"""Produced: the label-store summary quoted in data/dos/README.md (printed, nothing written).
Reproduce: the command below.

Where the per-atom DOS store stands: structures tried / labelled / failed (by reason), supercell sizes and CPU time.

    .venv/bin/python experiments/dos/label_report.py            # prints a markdown table
The remaining count is against every ≤ 8-atom MP-20 subset train structure plus the 100 test structures run_label.py labels.
"""
import pandas as pd

from xtalnb.dos import read_dos_index


def reason(row):
    if row.status == "ok": return "ok"
    e = row.error
    if "Z >86" in e or "Z > 86" in e: return "element not in GFN1-xTB (Z > 86)"
    if "max_super_atoms" in e: return "supercell too large"
    if "unphysical" in e and "sygvd" not in e and "not converged" not in e: return "charge runaway"
    if "sygvd" in e and "not converged" not in e: return "eigensolver failed (sygvd)"
    if "not converged" in e: return "SCF not converged"
    return "other: " + e[:40]

def chemistry(crystal):
    "'d', 'f', 'd+f' or 'sp' (the kinds of elements in the cell), with ', metal' when every element is a metal."
    from pymatgen.core import Element
    els = [Element.from_Z(int(z)) for z in set(crystal.atomic_numbers.tolist())]
    kinds = sorted({"f" if (e.is_lanthanoid or e.is_actinoid) else "d" for e in els if e.is_lanthanoid or e.is_actinoid or e.is_transition_metal})
    return ("+".join(kinds) or "sp") + (", metal" if all(e.is_metal for e in els) else "")

if __name__ == "__main__":
    from xtalnb.data import load_dataset
    idx = read_dos_index("data/dos")
    idx["attempts_n"] = pd.to_numeric(idx.attempts, errors="coerce")
    idx["why"] = [reason(r) for r in idx.itertuples()]
    idx["deferred"] = (idx.status == "failed") & idx.error.str.startswith("SCFError") & (idx.attempts_n < 4)
    train = {str(c.id): c for c in load_dataset("mp20_subset", "train", progress=False) if c.num_atoms <= 8}
    n_train = len(train)
    tried_train = int((idx.split == "train").sum())
    print(f"train structures (≤ 8 atoms): {n_train}, tried {tried_train}, left {n_train - tried_train}; test tried {int((idx.split == 'test').sum())}")
    print(f"failures whose retry ladder is deferred to pass 2: {int(idx.deferred.sum())}\n")
    g = idx.groupby("why").agg(n=("id", "size"), cpu_h=("cpu_seconds", lambda s: s.sum() / 3600),
                               cpu_s_median=("cpu_seconds", "median"))
    print(g.to_markdown(floatfmt=("", ".0f", ".3g", ".3g")))
    ok = idx[idx.status == "ok"].copy()
    ok["n_super"] = ok.n_super.astype(float)
    bins = [0, 16, 32, 48, 64, 96, 128, 300]
    t = ok.groupby(pd.cut(ok.n_super, bins), observed=True).agg(n=("id", "size"), cpu_s_median=("cpu_seconds", "median"),
                                                                  cpu_s_mean=("cpu_seconds", "mean"))
    print("\nlabelled, by supercell size (atoms):\n" + t.to_markdown(floatfmt=("", ".0f", ".3g", ".3g")))
    # which chemistry fails: d / f elements and all-metal cells (an unbiased store would have the same mix in every column)
    tr = idx[idx.split == "train"].copy()
    tr["chemistry"] = [chemistry(train[i]) for i in tr.id]
    tab = pd.crosstab(tr.chemistry, tr.why, margins=True, margins_name="all")
    print("\ntrain structures tried, by chemistry (d: a transition metal, f: a lanthanide or actinide; metal: every element a metal):\n"
          + tab.to_markdown())
    print(f"\ntotal: {len(idx)} tried, {len(ok)} labelled, {idx.cpu_seconds.sum() / 3600:.2f} CPU-hours of xTB "
          f"(sum of per-structure process time; wall time depends on how many workers ran and what else ran)")
