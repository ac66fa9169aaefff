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


def snapshot_cpu_h(pt: Path) -> float:
    "Training CPU-hours a snapshot's file name records (`<recipe>-cpu000.60h.pt`)."
    return float(pt.stem.rsplit("-cpu", 1)[1].rstrip("h"))


def snapshots(names=None, cpu_h=None):
    "(recipe name, snapshot .pt) of the pilot snapshots on this machine (only those at `cpu_h` hours if given), oldest first."
    out = []
    for name in names or PILOT:
        out += [(name, p) for p in sorted((default_run_dir(name) / "snapshots").glob("*.pt"))
                if cpu_h is None or any(abs(snapshot_cpu_h(p) - h) < 1e-6 for h in cpu_h)]
    return out


def measure(csp_n: int, denovo_n: int, names=None, cpu_h=None, device="cpu"):
    from xtalnb.yardstick import load_table, yardstick
    done = set(load_table(RESULTS)["sha256"]) if (RESULTS / "yardstick.csv").exists() else set()
    for name, pt in snapshots(names, cpu_h):
        card = json.loads(pt.with_suffix(".json").read_text())
        if card["sha256"] in done:
            continue
        n = csp_n if card["task"] == "csp" else denovo_n
        yardstick(model=pt, n=n, steps=100, relax_n=0, device=device, results_dir=RESULTS,
                  work_dir=default_run_dir("pilot-eval"), progress=False)
        print(f"{name} {pt.name}: measured", flush=True)


def val_losses(names=None, val_size: int = 2048, device="cpu"):
    """Validation losses of every snapshot (EMA weights) on the first `val_size` mp_20 val crystals with fixed noise:
    a cheap learning curve beside the yardstick's. Rows go to val_loss.csv; snapshots already there are skipped."""
    import dataclasses

    import pandas as pd
    import torch

    from xtalnb.checkpoint import load_model
    from xtalnb.data import load_dataset
    from xtalnb.train import validation_losses
    from xtalnb.utils import atomic_write_text
    path = RESULTS / "val_loss.csv"
    old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["sha256"])
    val = load_dataset("mp_20", "val", progress=False)[:val_size]
    rows = []
    for name, pt in snapshots(names):
        model, diffusion, card = load_model(pt, device=device)
        if card["sha256"] in set(old["sha256"]):
            continue
        cfg = dataclasses.replace(build_cfg(card), val_size=val_size)
        model.eval()
        with torch.no_grad():
            m = validation_losses(model, diffusion, val, cfg, task=card["task"], device=device)
        rows.append({"recipe": name, "snapshot": pt.stem, "sha256": card["sha256"], "task": card["task"],
                     "family": card["family"], "size": card.get("size"), "train_cpu_hours": card["cpu_hours"],
                     "train_steps": card["steps"], "val_size": val_size, **{f"val_{k}": v for k, v in m.items()}})
        print(pt.stem, {k: round(v, 4) for k, v in m.items()}, flush=True)
    t = pd.concat([old, pd.DataFrame(rows)], ignore_index=True) if rows else old
    atomic_write_text(t.to_csv(index=False), path)
    return t


def grad_share(names=None, n: int = 128, device="cpu"):
    """How much each weighted loss term drives the shared trunk: the norm of its gradient on the network's parameters outside
    the output heads, on the first `n` mp_20 val crystals at one seeded draw of t and noise, for every de novo snapshot.
    A term whose gradient is orders of magnitude below the others is barely trained. Rows go to grad_share.csv."""
    import pandas as pd
    import torch

    from xtalnb.checkpoint import load_model
    from xtalnb.crystal import CrystalBatch
    from xtalnb.data import load_dataset
    from xtalnb.utils import atomic_write_text
    val = load_dataset("mp_20", "val", progress=False)[:n]
    rows = []
    for name, pt in snapshots(names):
        model, diffusion, card = load_model(pt, device=device)
        if card["task"] != "denovo":
            continue
        w = card["spec"]["train"]["loss_weights"]
        b = CrystalBatch.from_crystals(val, device=device)
        g = torch.Generator().manual_seed(0)
        t = diffusion.sample_t(len(val), generator=g)
        noisy, targets = diffusion.q_sample(b, t, generator=g)
        model.train()
        out = model(noisy["types"], noisy["frac"], noisy["lattice"], b.num_atoms, b.batch, diffusion.model_time(t))
        losses = diffusion.losses(out, targets, b)
        trunk = [p for k, p in model.named_parameters() if p.requires_grad and not k.split(".")[0].endswith("_out")]
        row = {"recipe": name, "snapshot": pt.stem, "family": card["family"], "train_cpu_hours": card["cpu_hours"]}
        for k, v in losses.items():
            grads = torch.autograd.grad(w[k] * v, trunk, retain_graph=True, allow_unused=True)
            row[f"loss_{k}"], row[f"weight_{k}"] = float(v), w[k]
            row[f"grad_{k}"] = float(torch.sqrt(sum((x ** 2).sum() for x in grads if x is not None)))
        if diffusion.discrete_types:   # D3PM: do masked atoms follow the crystal's revealed elements?
            row.update(type_coherence(model, diffusion, b))
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    t = pd.DataFrame(rows)
    atomic_write_text(t.to_csv(index=False), RESULTS / "grad_share.csv")
    return t


def type_coherence(model, diffusion, b, ts=(100, 500)) -> dict:
    """For a D3PM model: at step t (a fraction t/T of the atoms masked), the predicted probability that a masked atom is one
    of the elements its crystal contains (`coh_t<t>`). A model that has learnt that crystals have few elements puts most
    of its mass there once most atoms are revealed; a model that predicts every atom from the element marginals does not."""
    import torch
    out = {}
    z0 = b.atomic_numbers - 1
    present = torch.zeros(len(b.num_atoms), diffusion.types.K, dtype=torch.float64)
    present[b.batch, z0] = 1.0
    model.eval()
    for t_int in ts:
        g = torch.Generator().manual_seed(1)
        t = torch.full((len(b.num_atoms),), t_int, dtype=torch.long)
        noisy, _ = diffusion.q_sample(b, t, generator=g)
        with torch.no_grad():
            logits = model(noisy["types"], noisy["frac"], noisy["lattice"], b.num_atoms, b.batch, diffusion.model_time(t))["types"]
        masked = noisy["types"] == diffusion.types.mask
        mass = (torch.softmax(logits.double(), -1) * present[b.batch]).sum(1)
        out[f"coh_t{t_int}"] = float(mass[masked].mean())
    return out


def table() -> str:
    "The pilot table (markdown): every measured snapshot's proxy metrics beside its validation losses."
    import pandas as pd

    from xtalnb.yardstick import load_table
    t = load_table(RESULTS)
    v = pd.read_csv(RESULTS / "val_loss.csv")[["sha256", "val_lattice", "val_frac"]]
    t = t.merge(v, on="sha256", how="left")
    t["recipe"] = t["model"].str.replace(r"-cpu[0-9.]+h$", "", regex=True).str.replace("pilot-", "")
    cols = {"csp": ["match_rate", "rmse"], "denovo": ["valid", "struct_valid", "comp_valid", "spp_pass", "compact_window",
                                                   "wdist_density", "wdist_n_elements", "non_p1"]}
    out = []
    for task, c in cols.items():
        g = t[t["task"] == task].sort_values(["recipe", "train_cpu_hours"])
        g = g[["recipe", "train_cpu_hours", "train_steps", "n"] + c + ["val_lattice", "val_frac"]].round(3)
        out.append(g.to_markdown(index=False))
    return "\n\n".join(out)


def build_cfg(card):
    "The TrainConfig a snapshot was trained with (its card's spec)."
    from xtalnb.train import TrainConfig
    return TrainConfig(**card["spec"]["train"])


def plot(path=ROOT / "figures" / "pilot_curves.png"):
    """Top row: the yardstick's quick proxy against training CPU-hours; bottom row: validation losses of the same
    snapshots (lattice and fractional-coordinate terms; comparable within a noise family)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from xtalnb.yardstick import load_table
    t = load_table(RESULTS)
    t["recipe"] = t["model"].str.replace(r"-cpu[0-9.]+h$", "", regex=True)
    v = pd.read_csv(RESULTS / "val_loss.csv") if (RESULTS / "val_loss.csv").exists() else None
    top = [("csp", "match_rate", "CSP match rate (100 steps, n=200)"), ("denovo", "valid", "valid (struct. + SMACT)"),
           ("denovo", "spp_pass", "passes SPP"), ("denovo", "compact_window", "inside PIGEN's C window"),
           ("denovo", "wdist_n_elements", "W(#elements) to train")]
    bottom = [("csp", "val_lattice", "CSP val loss: lattice"), ("csp", "val_frac", "CSP val loss: frac. coords"),
              ("denovo", "val_lattice", "de novo val loss: lattice"), ("denovo", "val_frac", "de novo val loss: frac. coords")]
    fig, axs = plt.subplots(2 if v is not None else 1, len(top), figsize=(4 * len(top), 6.6 if v is not None else 3.3),
                            squeeze=False)
    for row, (panels, tab, key) in enumerate([(top, t, "recipe"), (bottom, v, "recipe")][: axs.shape[0]]):
        for ax, (task, col, title) in zip(axs[row], panels):
            for recipe, g in tab[tab["task"] == task].groupby(key):
                g = g.sort_values("train_cpu_hours")
                ax.plot(g["train_cpu_hours"], g[col], "o-", label=recipe.replace("pilot-", ""))
            ax.set_xlabel("training CPU-hours"); ax.set_title(title, fontsize=10); ax.legend(fontsize=7)
        for ax in axs[row][len(panels):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["measure", "valloss", "gradshare", "plot", "table"])
    ap.add_argument("--csp-n", type=int, default=200)
    ap.add_argument("--denovo-n", type=int, default=500)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--cpu-h", nargs="*", type=float, help="measure only the snapshots at these CPU-hours")
    a = ap.parse_args()
    if a.what == "measure":
        measure(a.csp_n, a.denovo_n, a.only, a.cpu_h)
    elif a.what == "table":
        print(table())
    elif a.what == "valloss":
        val_losses(a.only)
    elif a.what == "gradshare":
        grad_share(a.only)
    else:
        print(plot())
