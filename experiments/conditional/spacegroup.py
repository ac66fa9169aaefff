"""Space-group conditioning (MatterGen Fig. 4a, Zeni et al. 2025, arXiv:2312.03687) on a shipped de novo base, and why it
lands (or not) in the target group. Produces results/conditional/spacegroup/ (per-structure CSV, summary CSV, figure) and, with
`train`, an adapter checkpoint in the run directory (`export/`), copied to data/checkpoints/ only by `ship`.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/conditional/spacegroup.py train   [--base denovo-mp20]
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/conditional/spacegroup.py measure [--model NAME_OR_PT] [--tag TAG]
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/conditional/spacegroup.py measure --atoms-from-group --tag new-base-group-atoms
    .venv/bin/python experiments/conditional/spacegroup.py counts      # training crystals per target group, mp_20 train
    .venv/bin/python experiments/conditional/spacegroup.py compatible  # how often a drawn atom count fits the target group
    .venv/bin/python experiments/conditional/spacegroup.py summary --tag TAG
    .venv/bin/python experiments/conditional/spacegroup.py ship        # copy the finished export to data/checkpoints/

`measure` draws n samples per target at γ = 0 (once) and γ = 2, 4 with the 100-step sampler, and reads each one's spglib group
(i) as generated and (ii) after a CHGNet relaxation (FIRE, fmax 0.1 eV/Å, ≤ 200 steps), each at symprec 0.1 and 0.01 Å:
MatterGen reads symmetry on relaxed S.U.N. samples, the first measurement here read it on unrelaxed ones.
Training, sampling and relaxation resume: the run directory keeps the training state, the per-structure CSV is appended per
(target, γ) block.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import refinetune  # beside this script
import torch

from xtalnb.utils import atomic_write_text, source_root

NAME = "denovo-mp20-adapter-spacegroup"
TARGETS = (225, 62, 194)                     # Fm-3m, Pnma, P6_3/mmc: common in MP-20
GAMMAS = (0.0, 2.0, 4.0)
SYMPRECS = (0.1, 0.01)
OUT = source_root() / "results" / "conditional" / "spacegroup"


def counts():
    from xtalnb.data import dataset_files
    sg = pd.concat([pd.read_csv(f, usecols=["spacegroup.number"]) for f in dataset_files("mp_20", "train")])["spacegroup.number"]
    top = sg.value_counts()
    rows = [{"space_group": int(g), "train_crystals": int(top.get(g, 0)), "share": float(top.get(g, 0) / len(sg)),
             "rank": int((top > top.get(g, 0)).sum() + 1)} for g in TARGETS]
    t = pd.DataFrame(rows)
    print(t.to_string(index=False))
    print(f"{len(top)} groups occur in {len(sg)} training crystals; {int((top < 10).sum())} of them fewer than 10 times")
    return t


def _groups(s) -> dict:
    from xtalnb.conditional import space_group_number
    out = {}
    for sp in SYMPRECS:
        try:
            out[f"sg_{sp}"] = space_group_number(s, symprec=sp)
        except Exception:  # noqa: BLE001  (spglib gives up on some cells with errors of its own types)
            out[f"sg_{sp}"] = np.nan
    return out


def compatible_share() -> pd.DataFrame:
    """How often an atom count drawn from all of train is one that training crystals of the target group have at all (a
    space group allows only cells whose atom count is a sum of its Wyckoff multiplicities)."""
    from xtalnb.data import load_dataset
    ds = load_dataset("mp_20", "train", progress=False)
    na = pd.Series([c.num_atoms for c in ds])
    sg = pd.Series([c.props.get("spacegroup.number") for c in ds])
    rows = [{"target": t, "counts_seen_in_group": sorted(set(na[sg == t])),
             "share_of_train_draws_compatible": float(na.isin(set(na[sg == t])).mean())} for t in TARGETS]
    t = pd.DataFrame(rows)
    atomic_write_text(t.to_csv(index=False), OUT / "atom_counts_compatible.csv")
    print(t.to_string(index=False))
    return t


def measure(model: str, tag: str, n: int, relax_steps: int, atoms_from_group: bool = False):
    from pymatgen.core import Structure

    from xtalnb.checkpoint import load_model
    from xtalnb.conditional import sample_shift
    from xtalnb.relax import relax
    net = load_model(model)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{tag}_structures.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["gamma", "target"])
    if atoms_from_group:      # the atom counts of the target group's training crystals, the same draws at every γ
        blocks = [(g, t) for t in TARGETS for g in (0.0, 2.0)]
    else:
        blocks = [(0.0, None)] + [(g, t) for g in GAMMAS if g > 0 for t in TARGETS]
    for g, t in blocks:
        have = done[(done.gamma == g) & ((done.target.isna()) if t is None else (done.target == t))]
        if len(have):
            continue
        if atoms_from_group:
            from xtalnb.conditional import space_group_num_atoms
            from xtalnb.sampling import generate
            structs = generate(num_atoms=space_group_num_atoms(t, n), model=net, cond={"space_group": float(t)}, guidance=g,
                               steps=100, seed=0, progress=False)
        else:
            df = sample_shift(net, [{"space_group": float(t if t is not None else TARGETS[0])}], gammas=(g,), n=n, steps=100,
                              seed=0)
            structs = [Structure.from_str(js, fmt="json") for js in df["structure"]]
        rel = relax(structs, max_steps=relax_steps, progress=False)
        rows = []
        for i, (s, r) in enumerate(zip(structs, rel)):
            row = {"gamma": g, "target": t, "i": i, "formula": s.composition.reduced_formula, "num_atoms": len(s),
                   **{f"gen_{k}": v for k, v in _groups(s).items()}, "relax_status": r.status, "relax_steps": r.n_steps}
            if r.crystal is not None and r.status in ("converged", "unconverged"):
                row.update({f"rel_{k}": v for k, v in _groups(r.crystal.to_structure()).items()})
            rows.append(row)
        done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True)
        atomic_write_text(done.to_csv(index=False), path)
        print(f"{tag}: gamma {g}, target {t}: {len(rows)} samples", flush=True)
    return summarize(tag)


def crystal_system(sg) -> str:
    "The crystal system of a space-group number (NaN: undetermined)."
    if pd.isna(sg):
        return "none"
    for hi, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"), (167, "trigonal"),
                     (194, "hexagonal"), (230, "cubic")):
        if sg <= hi:
            return name
    raise ValueError(f"no space group {sg}")


def summarize(tag: str) -> pd.DataFrame:
    d = pd.read_csv(OUT / f"{tag}_structures.csv")
    per_target_unc = d[d.gamma == 0].target.notna().any()      # atoms_from_group: a γ = 0 block per target
    unc = d[d.gamma == 0]
    if "relax_status" in d:     # groups after relaxation only where the relaxation finished (converged or at its step cap)
        bad = ~d.relax_status.isin(["converged", "unconverged"])
        d.loc[bad, [c for c in d.columns if c.startswith("rel_sg")]] = np.nan
    rows = []
    for t in TARGETS:
        for g in GAMMAS:
            x = (unc[unc.target == t] if per_target_unc else unc) if g == 0 else d[(d.gamma == g) & (d.target == t)]
            row = {"model": tag, "target": t, "gamma": g, "n": len(x)}
            for stage in ("gen", "rel"):
                for sp in SYMPRECS:
                    col = f"{stage}_sg_{sp}"
                    row[f"{stage}_in_target_{sp}"] = float((x[col] == t).mean()) if col in x else np.nan
                    row[f"{stage}_not_p1_{sp}"] = float((x[col] > 1).mean()) if col in x else np.nan
                    row[f"{stage}_in_system_{sp}"] = (float((x[col].map(crystal_system) == crystal_system(t)).mean())
                                                      if col in x else np.nan)
            rows.append(row)
    s = pd.DataFrame(rows)
    atomic_write_text(s.to_csv(index=False), OUT / f"{tag}_summary.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(s.round(3).to_string(index=False))
    return s


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["train", "measure", "counts", "compatible", "summary", "ship"])
    ap.add_argument("--base", default="denovo-mp20")
    ap.add_argument("--budget-s", type=float, default=None, help="train: wall-clock cap of this call (resumes on the next)")
    ap.add_argument("--model", default=None, help="measure: model name or .pt (default: the finished export)")
    ap.add_argument("--tag", default="new-base")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--relax-steps", type=int, default=200)
    ap.add_argument("--atoms-from-group", action="store_true",
                    help="measure: draw atom counts from the target group's training crystals (the same draws at γ = 0 and 2)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.what == "train":       # the card's recipe (3,000 steps of 32, lr 1e-3, p_uncond 0.2) on mp_20 train: refinetune.py
        refinetune.train(NAME, a.base, a.budget_s)
    elif a.what == "measure":
        from xtalnb.train import default_run_dir
        measure(a.model or str(default_run_dir(NAME) / "export" / f"{NAME}.pt"), a.tag, a.n, a.relax_steps, a.atoms_from_group)
    elif a.what == "counts":
        counts()
    elif a.what == "compatible":
        compatible_share()
    elif a.what == "summary":
        summarize(a.tag)
    else:
        refinetune.ship(NAME)
