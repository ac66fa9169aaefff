"""The base-model campaign: an equal-CPU pilot of recipes, trained round-robin so that every recipe has the same process CPU
time at every round, then the chosen recipes continued to the campaign budget.

    nice -n 19 python experiments/base_models/campaign.py pilot --round-cpu-h 0.2 --until-cpu-h 1.0
    nice -n 19 python experiments/base_models/campaign.py milestone        # compact states into milestones/ (commit them)
    nice -n 19 python experiments/base_models/campaign.py campaign --until-cpu-h 20   # the chosen recipes, continued
    python experiments/base_models/campaign.py ship denovo-mp20 --replace --from-milestone  # the committed milestone, shipped

Run directories live outside the repository (`xtalnb.train.default_run_dir`); a missing one is restored from
`milestones/<name>.pt`. EMA snapshots for the learning curves go to `<run dir>/snapshots/` every `--snapshot-cpu-h`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from xtalnb.train import (
    default_run_dir,
    model_spec,
    restore_milestone,
    save_milestone,
    train_spec,
)
from xtalnb.utils import atomic_torch_save

HERE = Path(__file__).resolve().parent
MILESTONES = HERE / "milestones"

# The pilot (issue: choose by measurement): noise family for de novo, network size for each task, equal CPU budget each.
PILOT = {
    "pilot-denovo-diffcsp-256x4": model_spec("denovo", "diffcsp", "256x4", steps=200_000),
    "pilot-denovo-mattergen-256x4": model_spec("denovo", "mattergen", "256x4", steps=200_000, w_types=1.0),
    "pilot-csp-diffcsp-256x4": model_spec("csp", "diffcsp", "256x4", steps=200_000),
    "pilot-csp-diffcsp-512x6": model_spec("csp", "diffcsp", "512x6", steps=60_000),
    "pilot-denovo-diffcsp-512x6": model_spec("denovo", "diffcsp", "512x6", steps=60_000),
    # the MatterGen family with the type loss weighted 20 (as DiffCSP's de novo): at weight 1 its type loss gives the shared
    # trunk a gradient 17x smaller than the coordinates' and 56x smaller than the lattice's at 0.8 CPU-h (results/base_models/README.md)
    "pilot-denovo-mattergen-w20-256x4": model_spec("denovo", "mattergen", "256x4", steps=200_000, w_types=20.0),
}
# Branches start from their parent's committed milestone (same weights, optimizer and CPU-hours) with their own objective;
# the card's `parent` records the parent's step and CPU-hours at the branch point.
BRANCH_OF = {"pilot-denovo-mattergen-w20-256x4": "pilot-denovo-mattergen-256x4"}


# The campaign: the recipes the pilot chose, continued (same run directories, same schedules) to the campaign budget and
# shipped under the default names. See results/base_models/README.md for the pilot table and the choice. CSP: DiffCSP 256 x 4.
# De novo: the MatterGen family with the type loss weighted 20 (at 0.8 CPU-h it leads the DiffCSP family on validity,
# density, element count and PIGEN's compactness window, and the MatterGen family at type weight 1 on all of them).
CAMPAIGN = {
    "denovo-mp20": "pilot-denovo-mattergen-w20-256x4",
    "csp-mp20": "pilot-csp-diffcsp-256x4",
}


def ensure_run(name: str, spec: dict) -> Path:
    """The run directory of `name`, restored if missing: from its own milestone, or (a branch without one) from its parent's
    milestone with the branch's recipe stamped in and the branch point recorded."""
    rd = default_run_dir(name)
    if (rd / "state.pt").exists() or (MILESTONES / f"{name}.pt").exists() or name not in BRANCH_OF:
        return rd     # train_spec restores an own milestone itself
    parent = BRANCH_OF[name]
    src = MILESTONES / f"{parent}.pt"
    if not src.exists():
        raise FileNotFoundError(f"branch {name} needs its parent's milestone {src}")
    restore_milestone(src, rd)
    st = torch.load(rd / "state.pt", map_location="cpu", weights_only=False)
    st["parent"] = {"recipe": parent, "step": st["step"], "cpu_hours": st.get("cpu_s", 0.0) / 3600}
    st["spec"] = spec
    atomic_torch_save(st, rd / "state.pt")
    print(f"{name}: branched from {parent} at step {st['step']} ({st['parent']['cpu_hours']:.2f} CPU-h)", flush=True)
    return rd


def run_round_robin(recipes: dict, round_cpu_h: float, until_cpu_h: float, snapshot_cpu_h: float, threads: int = 1):
    "Give every recipe `round_cpu_h` more CPU-hours per round until each has `until_cpu_h`."
    r = 1
    while True:
        budget = min(r * round_cpu_h, until_cpu_h)
        for name, spec in recipes.items():
            ensure_run(name, spec)
            t0 = time.time()
            res = train_spec(name, spec, cpu_hours=budget, run_dir=default_run_dir(name),
                             out_path=default_run_dir(name) / f"{name}.pt", milestone=MILESTONES / f"{name}.pt",
                             threads=threads, progress=False, export_every_s=900, snapshot_every_cpu_h=snapshot_cpu_h)
            print(f"{time.strftime('%H:%M:%S')} {name}: step {res['step']}, {res['cpu_s'] / 3600:.3f} CPU-h "
                  f"({time.time() - t0:.0f} s wall this round)", flush=True)
        if budget >= until_cpu_h:
            return
        r += 1


def ship(name: str, replace: bool = False, from_milestone: bool = False):
    """Export the EMA weights of the campaign run behind `name` to data/checkpoints/<name>.pt with a new card. Refuses to
    replace a shipped file unless `replace` (a default never overwrites a shipped file). `from_milestone`: export the
    committed milestone instead of the live run (the shipped file is then rebuilt from git alone)."""
    import tempfile

    from xtalnb.checkpoint import checkpoint_dir
    from xtalnb.train import export_default
    run = CAMPAIGN[name]
    out = checkpoint_dir() / f"{name}.pt"
    if out.exists() and not replace:
        raise FileExistsError(f"{out} is shipped; pass --replace to replace it with the campaign run {run}")
    with tempfile.TemporaryDirectory() as td:
        rd = default_run_dir(run)
        if from_milestone:
            if not (MILESTONES / f"{run}.pt").exists():
                raise FileNotFoundError(f"no committed milestone {MILESTONES / f'{run}.pt'}")
            rd = restore_milestone(MILESTONES / f"{run}.pt", Path(td)).parent
        card = export_default(name, rd, spec=PILOT[run], out_path=out)
    print(f"{out.name}: {run} at step {card['steps']}, {card['cpu_hours']:.2f} CPU-h")
    return card


def write_milestones(names):
    "Compact every named run's state into milestones/ (skips runs that do not exist here)."
    for name in names:
        rd = default_run_dir(name)
        if (rd / "state.pt").exists():
            p = save_milestone(rd, MILESTONES / f"{name}.pt")
            print(f"{p.name}: {p.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pilot", "milestone", "campaign", "ship"])
    ap.add_argument("name", nargs="?", help="ship: the shipped model name (a key of CAMPAIGN)")
    ap.add_argument("--replace", action="store_true", help="ship: replace the shipped file")
    ap.add_argument("--from-milestone", action="store_true", help="ship: export the committed milestone, not the live run")
    ap.add_argument("--round-cpu-h", type=float, default=0.2)
    ap.add_argument("--until-cpu-h", type=float, default=1.0)
    ap.add_argument("--snapshot-cpu-h", type=float, default=0.2)
    ap.add_argument("--only", nargs="*", help="recipe names (default: all)")
    a = ap.parse_args()
    recipes = {k: v for k, v in PILOT.items() if not a.only or k in a.only}
    if a.what == "pilot":
        run_round_robin(recipes, a.round_cpu_h, a.until_cpu_h, a.snapshot_cpu_h)
    elif a.what == "campaign":
        run_round_robin({r: PILOT[r] for r in CAMPAIGN.values() if not a.only or r in a.only}, a.round_cpu_h,
                        a.until_cpu_h, a.snapshot_cpu_h)
    elif a.what == "ship":
        if a.name not in CAMPAIGN:
            ap.error(f"ship needs a model name from {sorted(CAMPAIGN)}")
        ship(a.name, a.replace, a.from_milestone)
    else:
        write_milestones(recipes)
