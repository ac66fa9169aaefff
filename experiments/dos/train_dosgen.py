"""Produced: the checkpoints dos-surrogate, dos-denovo-mp20 and dos-classifier (data/checkpoints/) and the frozen snapshots
data/dos/dosgen_split*.json. Reproduce (shipped p2 models): `... train_dosgen.py surrogate 1500 snap=p2` (and `classifier 1500`,
`generator 8000`), as experiments/dos/run_final.sh runs them.

Train the DOS surrogate and the DOS-conditioned generator on a frozen snapshot of the labelled store (resumable).

    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/train_dosgen.py surrogate 800 > results/dos/logs/train_surrogate.log 2>&1 &
    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/train_dosgen.py generator 1500 > results/dos/logs/train_generator.log 2>&1 &
    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/train_dosgen.py classifier 800 > results/dos/logs/train_classifier.log 2>&1 &

The second argument is the number of optimisation steps (batch 32); rerunning the same command resumes from the run directory
(~/.cache/xtalnb/runs/<name>, or $XTALNB_RUNS/<name>); `generator N stop` exports the generator's last checkpoint without
training further. The snapshot (ids of the train / val / test
structures) is written once to data/dos/dosgen_split.json and reused.

    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/train_dosgen.py surrogate 800 all > results/dos/logs/train_surrogate_all.log 2>&1 &

`surrogate N all` retrains `dos-surrogate` on every ok label of the store (data/dos/dosgen_split_all.json, written once): the
test set is the same 80 MP-20 test-split structures as in dosgen_split.json (so the test MAE stays comparable), validation the
same 14 ids, and training every other labelled train-split structure; run directory `dos-surrogate-all`.

`snap=NAME` (any of the three) does the same with a new frozen snapshot data/dos/dosgen_split_NAME.json (written once from the
store as it is then; same test and val ids), run directory `<checkpoint>-NAME`; `all` is `snap=all`. For example

    OMP_NUM_THREADS=1 nohup nice -n 19 .venv/bin/python experiments/dos/train_dosgen.py generator 2000 snap=s6 > results/dos/logs/train_generator_s6.log 2>&1 &
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xtalnb.checkpoint import load_model
from xtalnb.dos import load_dos_store
from xtalnb.dosgen import (
    DOSSurrogate,
    dos_mae,
    export_surrogate,
    train_dos_conditional,
    train_dos_surrogate,
)
from xtalnb.train import default_run_dir
from xtalnb.utils import atomic_write_text

SPLIT = Path("data/dos/dosgen_split.json")
SPLIT_ALL = Path("data/dos/dosgen_split_all.json")

def snapshot_all(path=SPLIT_ALL):
    "Every ok label: the test and val ids of the first snapshot kept fixed, every other labelled train-split id in train."
    store = load_dos_store("data/dos")
    by_id = {c.id: c for c in store}
    first = json.loads(SPLIT.read_text())
    if not path.exists():
        fixed = set(first["test"]) | set(first["val"])
        split = {"train": sorted(c.id for c in store if c.props["split"] == "train" and c.id not in fixed), "val": first["val"],
                 "test": first["test"], "note": "all ok labels of data/dos; test and val ids as in dosgen_split.json (fixed, so the "
                 "test MAE is comparable with the first surrogate); train = every other labelled MP-20 train-split structure"}
        atomic_write_text(json.dumps(split, indent=1), path)
    split = json.loads(path.read_text())
    assert split["test"] == first["test"] and split["val"] == first["val"], "test/val ids must stay those of dosgen_split.json"
    return {k: [by_id[i] for i in split[k]] for k in ("train", "val", "test")}

def snapshot():
    store = load_dos_store("data/dos")
    by_id = {c.id: c for c in store}
    if not SPLIT.exists():
        tr = sorted(c.id for c in store if c.props["split"] == "train")
        rng = np.random.default_rng(0)
        val = set(rng.choice(tr, size=max(1, len(tr) // 10), replace=False).tolist())
        split = {"train": [i for i in tr if i not in val], "val": sorted(val),
                 "test": sorted(c.id for c in store if c.props["split"] == "test"),
                 "note": "frozen snapshot of data/dos at the start of training; val = 10% of the labelled train-split ids (seed 0)"}
        atomic_write_text(json.dumps(split, indent=1), SPLIT)
    split = json.loads(SPLIT.read_text())
    return {k: [by_id[i] for i in split[k]] for k in ("train", "val", "test")}

if __name__ == "__main__":
    what, steps = sys.argv[1], int(sys.argv[2])
    snap = next((a[5:] for a in sys.argv[3:] if a.startswith("snap=")), "all" if "all" in sys.argv[3:] else "")
    split_path = Path(f"data/dos/dosgen_split_{snap}.json") if snap else SPLIT
    suffix = f"-{snap}" if snap else ""
    data = snapshot_all(split_path) if snap else snapshot()
    print({k: len(v) for k, v in data.items()}, flush=True)
    if what == "surrogate":
        run = default_run_dir("dos-surrogate" + suffix)
        ys = np.concatenate([c.atom_props["dos"].ravel() for c in data["train"]])
        def make():
            torch.manual_seed(0)
            return DOSSurrogate(y_scale=float(ys.std())).init_from_denoiser(load_model("denovo-mp20-diffcsp")[0])
        model = make()
        res = train_dos_surrogate(model, data["train"], run, val_set=data["val"], steps=steps, batch_size=32, lr=5e-4, ckpt_every=50,
                                  progress=False)
        ema_model = DOSSurrogate.from_config(model.config); ema_model.load_state_dict(res["ema"].shadow)
        val, test = dos_mae(ema_model, data["val"]), dos_mae(ema_model, data["test"])
        mean_pred = np.concatenate([c.atom_props["dos"] for c in data["train"]]).mean(0)       # baseline: one mean DOS for every atom
        base = float(np.concatenate([np.abs(c.atom_props["dos"] - mean_pred).mean(1) for c in data["test"]]).mean())
        card = {"data": f"GFN1-xTB per-atom DOS (data/dos, 7 Å Γ supercells): {len(data['train'])} train / {len(data['val'])} val "
                        f"structures of the MP-20 train split, test = {len(data['test'])} labelled MP-20 test-split structures "
                        f"(data/dos/{split_path.name})",
                "init": "trunk of denovo-mp20-diffcsp (type/time embeddings, 4 message-passing layers, final LayerNorm); new 400-output head",
                "val_mae": val["mae"], "test_mae": test["mae"], "test_atoms": test["n_atoms"], "test_mean_abs_dos": test["mean_abs_dos"],
                "test_mae_mean_dos_baseline": base, "mae_units": "states/eV/atom, mean over 400 grid points and atoms",
                "hardware": "CPU (2 cores shared by several jobs, nice 19)", "seed": 0,
                "process_cpu_seconds_this_call": time.process_time()}
        card = export_surrogate("data/checkpoints/dos-surrogate", run, card)
        print(json.dumps({k: card[k] for k in ("steps", "wall_hours", "val_mae", "test_mae", "test_mae_mean_dos_baseline")}), flush=True)
    elif what == "classifier":      # time-dependent surrogate g(y | S_t, t) for classifier-based guidance (dosmatgen 2.3)
        run = default_run_dir("dos-classifier" + suffix)
        base_net, diffusion, _ = load_model("denovo-mp20-diffcsp")
        ys = np.concatenate([c.atom_props["dos"].ravel() for c in data["train"]])
        torch.manual_seed(0)
        model = DOSSurrogate(y_scale=float(ys.std())).init_from_denoiser(base_net)
        train_dos_surrogate(model, data["train"], run, steps=steps, batch_size=32, lr=5e-4, diffusion=diffusion, ckpt_every=50,
                            progress=False)
        card = export_surrogate("data/checkpoints/dos-classifier", run, {
            "data": f"{len(data['train'])} train structures (data/dos/{split_path.name})",
            "init": "trunk of denovo-mp20-diffcsp; trained on structures noised by denovo-mp20-diffcsp's diffusion, t ~ U{1..T}",
            "use": "xtalnb.classifier.ClassifierGuidance(xtalnb.dosgen.DOSMatch(model, atom_target), target=0, sigma_y=...)"})
        print(json.dumps({k: card[k] for k in ("steps", "wall_hours")}), flush=True)
    elif what == "generator":
        name, run = "dos-denovo-mp20", default_run_dir("dos-denovo-mp20" + suffix)
        res = train_dos_conditional(name, data["train"], mode="full", steps=steps, batch_size=32, lr=2e-4, p_uncond=0.2,
                                    p_atom_uncond=0.2, run_dir=run, ckpt_every=50, progress=False,
                                    time_budget_s=0.0 if "stop" in sys.argv[3:] else None,   # `stop`: export the last checkpoint now
                                    export=True if "stop" in sys.argv[3:] else "done", data_desc=f"data/dos/{split_path.name}")
        print(json.dumps({k: res[k] for k in ("step", "done", "elapsed_s", "trainable_parameters", "scale")}), flush=True)
