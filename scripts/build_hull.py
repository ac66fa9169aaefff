#!/usr/bin/env python
"""Build the CHGNet reference hull data in data/hull/ (resumable: rerun to continue).

    python scripts/build_hull.py --elements all                    # elemental references of every MP-20 element -> data/hull/elemental_refs.json
    python scripts/build_hull.py --split train --n-jobs 1          # MP-20 subset train entries -> data/hull/mp20_train_chgnet.jsonl
    python scripts/build_hull.py --split train --limit 100         # the first 100 only
    python scripts/build_hull.py --split train --singlepoint       # CHGNet single points at the MP geometries (MP-20 subset hull)
    python scripts/build_hull.py --dataset mp_20 --split test --singlepoint --out-dir data/hull/mp_20   # the self-consistent "chgnet" hull
    python scripts/build_hull.py --aflow-bulk 100                  # CHGNet vs AFLOW bulk moduli, first 100 test structures

All the work is done by `xtalnb.hull` (elemental_references, build_hull_entries, build_singlepoint_entries) and `xtalnb.relax`
(build_aflow_bulk); this is only the command line.
"""
import argparse


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--elements", default=None, help="'all' (every element of MP-20) or comma-separated symbols")
    p.add_argument("--split", default=None, help="split whose structures to relax (train, val, test)")
    p.add_argument("--dataset", default="mp20_subset", help="dataset of --split (mp20_subset, mp_20)")
    p.add_argument("--limit", type=int, default=None, help="only the first LIMIT structures of the split")
    p.add_argument("--chunk", type=int, default=50, help="structures per atomic checkpoint")
    p.add_argument("--n-jobs", type=int, default=1, help="worker processes")
    p.add_argument("--out-dir", default=None, help="default: data/hull of the source tree (or $XTALNB_HULL)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--singlepoint", action="store_true", help="with --split: single points at the given geometries, no relaxation")
    p.add_argument("--aflow-bulk", type=int, default=None, metavar="N", help="bulk moduli of the first N AFLOW test structures")
    p.add_argument("--refresh", action="store_true", help="also relax candidates added since an element was cached")
    a = p.parse_args()
    from xtalnb import hull as H
    from xtalnb import relax as R
    if a.elements:
        if a.elements == "all":
            from ase.data import chemical_symbols

            from xtalnb.data import load_dataset
            els = set()
            for split in ("train", "val", "test"):
                for c in load_dataset("mp_20", split, progress=False):
                    els |= {chemical_symbols[int(z)] for z in set(c.atomic_numbers.tolist())}
        else:
            els = [e.strip() for e in a.elements.split(",") if e.strip()]
        path = None if a.out_dir is None else f"{a.out_dir}/elemental_refs.json"
        refs = H.elemental_references(sorted(els), path=path, device=a.device, progress=True, refresh=a.refresh)
        print(f"{len(refs)} elemental references")
    crystals = None
    if a.split and a.dataset != "mp20_subset":
        from xtalnb.data import load_dataset
        crystals = list(load_dataset(a.dataset, a.split, limit=a.limit, progress=False))
    if a.split and a.singlepoint:
        cmd = None if a.dataset == "mp20_subset" else \
            f"python scripts/build_hull.py --dataset {a.dataset} --split {a.split} --singlepoint --chunk {a.chunk} --out-dir {a.out_dir}"
        path = H.build_singlepoint_entries(a.out_dir, chunk=a.chunk, limit=a.limit, split=a.split, device=a.device, crystals=crystals,
                                           build_command=cmd, kind="singlepoint" if cmd is None else "chgnet")
        print(f"entries in {path}")
    elif a.split:
        path = H.build_hull_entries(a.out_dir, chunk=a.chunk, limit=a.limit, n_jobs=a.n_jobs, split=a.split, device=a.device,
                                    crystals=crystals)
        print(f"entries in {path}")
    if a.aflow_bulk:
        path = R.build_aflow_bulk(a.aflow_bulk, a.out_dir, device=a.device, progress=True)
        print(f"bulk moduli in {path}")
    if not (a.elements or a.split or a.aflow_bulk):
        p.error("nothing to do: give --elements, --split and/or --aflow-bulk")


if __name__ == "__main__":
    main()
