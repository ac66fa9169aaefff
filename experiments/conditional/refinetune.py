"""Fine-tune a shipped conditional adapter again on the shipped `denovo-mp20` base, with the recipe its card records (conditions,
planned steps, batch size, learning rate, p_uncond), on `mp_20` train. The result goes to the run directory's `export/`
(`<runs>/<name>/export/<name>.{pt,json}`) and is copied to data/checkpoints/ only by `ship`, after it has been measured.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/conditional/refinetune.py train denovo-mp20-adapter-C [...]
    .venv/bin/python experiments/conditional/refinetune.py ship denovo-mp20-adapter-C

Only adapters whose labels are the MP-20 CSV's columns or cheap to compute (compactness, band_gap, e_above_hull, space_group)
are handled here; the (C, M_LED), magnetic-density + HHI and bulk-modulus adapters have their own scripts and label caches.
Resumable: a rerun continues the run directory's training state.
"""
from __future__ import annotations

import argparse
import json
import shutil

import torch

from xtalnb.checkpoint import checkpoint_dir
from xtalnb.train import default_run_dir

CHEAP = {"compactness", "band_gap", "e_above_hull", "space_group"}


def recipe(name: str) -> dict:
    "What the shipped card of `name` says it was trained with (conditions, mode, planned steps, optimiser settings)."
    card = json.loads((checkpoint_dir() / f"{name}.json").read_text())
    if card.get("finetune_mode") != "adapter":
        raise ValueError(f"{name} is not an adapter fine-tune (finetune_mode={card.get('finetune_mode')!r})")
    bad = set(card["conditions"]) - CHEAP
    if bad:
        raise ValueError(f"{name} needs labels {sorted(bad)} with caches of their own; use its own script")
    tc = card["train_config"]
    return {"props": card["conditions"], "steps": tc["steps"], "batch_size": tc["batch_size"], "lr": tc["lr"],
            "p_uncond": card.get("p_uncond", tc.get("p_uncond", 0.2))}


def train(name: str, base: str, budget_s: float | None):
    from xtalnb.conditional import finetune_conditional
    from xtalnb.data import load_dataset
    r = recipe(name)
    ds = load_dataset("mp_20", "train", progress=False)
    res = finetune_conditional(name, r["props"], base=base, train_set=ds, steps=r["steps"], batch_size=r["batch_size"],
                               lr=r["lr"], p_uncond=r["p_uncond"], time_budget_s=budget_s, progress=False,
                               out_dir=default_run_dir(name) / "export", data_desc="mp_20 train")
    print(name, {k: v for k, v in res.items() if k != "card"}, flush=True)


def ship(name: str):
    src = default_run_dir(name) / "export" / f"{name}.pt"
    if not src.exists():
        raise FileNotFoundError(f"no finished export {src}: run `train {name}` to the end first")
    for ext in (".pt", ".json"):
        shutil.copy(src.with_suffix(ext), checkpoint_dir() / f"{name}{ext}")
    print(name, "on", json.loads(src.with_suffix(".json").read_text())["base_model"], "->", checkpoint_dir())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["train", "ship"])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--base", default="denovo-mp20")
    ap.add_argument("--budget-s", type=float, default=None, help="train: wall-clock cap per model in this call")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for n in a.names:
        train(n, a.base, a.budget_s) if a.what == "train" else ship(n)
