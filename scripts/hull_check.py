#!/usr/bin/env python
"""Relax a seeded sample of an MP-20 split with the project's CHGNet protocol, for the hull check (resumable: rerun to continue).

    nice -n 19 python scripts/hull_check.py --split val --n 200      # the offset sample -> results/hull/relaxed_mp20_val.jsonl
    nice -n 19 python scripts/hull_check.py --split test --n 1000    # the hull check    -> results/hull/relaxed_mp20_test.jsonl

The sample is the first N of `numpy.random.default_rng(SEED).permutation(len(split))` of `load_dataset("mp_20", split)`,
so a larger N extends a finished run. Every CHUNK structures the JSON-lines file is rewritten atomically; finished ids are
skipped on a rerun. Relaxation: `xtalnb.relax.relax` with `xtalnb.relax.PROTOCOL` (CHGNet, FIRE + FrechetCellFilter,
fmax 0.1 eV/Å, <= 500 steps), one torch thread, 300 s per structure.
"""
import argparse
import json
import math
import os
from collections import Counter
from pathlib import Path

COMMAND = "python scripts/hull_check.py --split {split} --n {n} --seed {seed}"


def row(c, r, rank: int) -> dict:
    fin = lambda v: round(float(v), 6) if v is not None and math.isfinite(float(v)) else None
    from ase.data import chemical_symbols
    comp = {chemical_symbols[int(z)]: float(k) for z, k in sorted(Counter(c.atomic_numbers.tolist()).items())}
    return dict(id=str(c.id), rank=rank, formula=c.formula, composition=comp, n_atoms=int(c.num_atoms),
                status=r.status, reason=r.reason, n_steps=int(r.n_steps), energy_per_atom=fin(r.energy_per_atom),
                initial_energy_per_atom=fin(r.initial_energy_per_atom), max_force=fin(r.max_force),
                volume_per_atom_initial=fin(c.volume / c.num_atoms),
                volume_per_atom=fin(r.crystal.volume / r.crystal.num_atoms) if r.crystal is not None else None,
                time_s=round(r.time_s, 3), dft_formation_energy_per_atom=fin(c.props.get("formation_energy_per_atom")))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", required=True, choices=["train", "val", "test"])
    p.add_argument("--n", type=int, required=True, help="first N of the seeded permutation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=10, help="structures per atomic checkpoint")
    p.add_argument("--out-dir", default="results/hull")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.n < 1 or a.chunk < 1:
        p.error("--n and --chunk must be >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np

    from xtalnb.data import load_dataset
    from xtalnb.relax import CHGNET_VERSION, PROTOCOL, relax
    from xtalnb.utils import atomic_write_text, package_versions
    ds = load_dataset("mp_20", a.split, progress=False)
    order = np.random.default_rng(a.seed).permutation(len(ds))[: a.n]
    out = Path(a.out_dir)
    path = out / f"relaxed_mp20_{a.split}.jsonl"
    meta = dict(dataset="mp_20", split=a.split, n=a.n, seed=a.seed, sample="first n of numpy default_rng(seed).permutation(len(split))",
                protocol=PROTOCOL, model=f"CHGNet {CHGNET_VERSION}", timeout_s=300, torch_threads=1,
                command=COMMAND.format(split=a.split, n=a.n, seed=a.seed), versions=package_versions())
    old = json.loads(path.with_suffix(".meta.json").read_text()) if path.with_suffix(".meta.json").exists() else None
    if old is not None and old.get("seed") != a.seed:
        p.error(f"{path} was built with seed {old.get('seed')}, not {a.seed}; use another --out-dir")
    atomic_write_text(json.dumps(meta, indent=1), path.with_suffix(".meta.json"))
    lines = path.read_text().splitlines() if path.exists() else []
    done = {json.loads(x)["id"] for x in lines if x.strip()}
    todo = [(rank, ds[int(i)]) for rank, i in enumerate(order) if str(ds[int(i)].id) not in done]
    print(f"{a.split}: {len(done)} done, {len(todo)} to relax", flush=True)
    for k in range(0, len(todo), a.chunk):
        part = todo[k:k + a.chunk]
        res = relax([c for _, c in part], fmax=PROTOCOL["fmax"], max_steps=PROTOCOL["max_steps"], relax_cell=PROTOCOL["relax_cell"],
                    timeout_s=300.0, n_jobs=1, n_threads=1, device=a.device, progress=False)
        lines += [json.dumps(row(c, r, rank)) for (rank, c), r in zip(part, res)]
        atomic_write_text("\n".join(lines) + "\n", path)
        print(f"{a.split}: {len(lines)} / {a.n}", flush=True)


if __name__ == "__main__":
    main()
