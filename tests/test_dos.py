"Tests of xtalnb.dos: DOSMatGen JSON loader, GFN1-xTB per-atom DOS (sum rules, symmetry, known cases), resumable store."
import gzip
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from ase.build import bulk
from scipy.special import expit

from xtalnb.crystal import Crystal
from xtalnb.data import dataset_files
from xtalnb.dos import (DOS_POINTS, SCFError, HARTREE, KB_HARTREE, dos_grid, fermi_level, label_dos, levels_dos, load_dos_store,
                        load_dosmatgen_json, make_supercell, per_atom_dos, plane_spacings, smear, supercell_repeats,
                        xtb_levels)

pytest.importorskip("tblite")

SI = Crystal.from_atoms(bulk("Si", "diamond", a=5.43), id="Si")
NACL = Crystal.from_atoms(bulk("NaCl", "rocksalt", a=5.64), id="NaCl")
AL = Crystal.from_atoms(bulk("Al", "fcc", a=4.05), id="Al")
I0 = int(np.argmin(abs(dos_grid())))


@pytest.fixture(scope="module")
def si_levels():
    return xtb_levels(SI, reps=(2, 2, 2))


@pytest.fixture(scope="module")
def nacl_levels():
    return xtb_levels(NACL, min_length=6.0)


# --- loader ---------------------------------------------------------------------------------------------------------
def _write(path, recs):
    with gzip.open(path, "wt") as f:
        json.dump(recs, f)


def test_fixture_layout_is_refused_as_dos_and_read_with_its_own_length():
    fixture = dataset_files("dos_json", "all")[0]
    with pytest.raises(ValueError, match="expected 400"):
        load_dosmatgen_json(fixture, limit=3)
    ds = load_dosmatgen_json(fixture, n_points=3, limit=20)
    raw = json.load(gzip.open(fixture, "rt"))[:20]
    assert len(ds) == 20
    for c, r in zip(ds, raw):
        assert c.atom_props["dos"].shape == (len(r["atomic_numbers"]), 3)
        np.testing.assert_allclose(c.atom_props["dos"], np.array(r["y"]), rtol=1e-6)
        d = np.linalg.solve(np.array(r["cell"]).T, (c.cart_coords - np.array(r["positions"])).T).T
        np.testing.assert_allclose(d, np.round(d), atol=1e-8)


def test_loader_real_layout_and_bad_rows(tmp_path):
    rng = np.random.default_rng(1)
    recs = [dict(structure_id="a", positions=[[0, 0, 0], [1, 1, 1]], cell=(np.eye(3) * 3).tolist(), atomic_numbers=[28, 79],
                 y=rng.random((2, DOS_POINTS)).tolist())]
    _write(tmp_path / "ok.json.gz", recs)
    c = load_dosmatgen_json(tmp_path / "ok.json.gz")[0]
    np.testing.assert_allclose(c.atom_props["dos"], np.array(recs[0]["y"]), rtol=1e-6)
    recs[0]["y"] = [row[:399] for row in recs[0]["y"]]
    _write(tmp_path / "short.json.gz", recs)
    with pytest.raises(ValueError, match="length 399, expected 400"):
        load_dosmatgen_json(tmp_path / "short.json.gz")
    recs[0]["y"] = recs[0]["y"][:1]
    _write(tmp_path / "rows.json.gz", recs)
    with pytest.raises(ValueError, match="1 rows but the structure has 2 atoms"):
        load_dosmatgen_json(tmp_path / "rows.json.gz")


# --- supercells -----------------------------------------------------------------------------------------------------
def test_supercell_rule_uses_plane_spacings():
    L = np.array([[3.0, 0, 0], [2.9, 1.0, 0], [0, 0, 12.0]])     # oblique: |b| = 3.07 Å but the b-planes are 1.0 Å apart
    d = plane_spacings(L)
    np.testing.assert_allclose(d, [abs(np.linalg.det(L)) / np.linalg.norm(np.cross(L[1], L[2])), 1.0, 12.0])
    assert supercell_repeats(L, 10.0) == (int(np.ceil(10 / d[0])), 10, 1)
    assert all(n * di >= 10.0 - 1e-9 for n, di in zip(supercell_repeats(SI.lattice, 10.0), plane_spacings(SI.lattice)))
    z, pos, Ls, amap = make_supercell(NACL, (2, 2, 1))
    assert len(z) == 8 and list(z[:4]) == [11, 17, 11, 17] and list(amap) == [0, 1] * 4
    # every supercell atom is its primitive atom shifted by a primitive lattice vector
    shift = np.linalg.solve(NACL.lattice.T, (pos - NACL.cart_coords[amap]).T).T
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)


# --- levels, projection, sum rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("projection", ["mulliken", "lowdin"])
def test_projection_sum_rules(projection):
    lv = xtb_levels(SI, reps=(2, 2, 1), projection=projection)
    np.testing.assert_allclose(lv.weights.sum(0), 1.0, atol=1e-8)              # each level fully distributed
    np.testing.assert_allclose(lv.weights.sum(1), lv.n_orbitals, atol=1e-8)    # sum over levels = orbitals on the atom
    if projection == "lowdin":
        assert lv.weights.min() > -1e-12


def test_valence_counts_and_fermi_level(si_levels, nacl_levels):
    for lv, zval in [(si_levels, {14: 4}), (nacl_levels, {11: 1, 17: 7})]:
        pop = lv.weights @ lv.occupations
        np.testing.assert_allclose(pop + lv.charges, [zval[int(z)] for z in lv.numbers], atol=1e-6)
        assert lv.n_electrons == pytest.approx(sum(zval[int(z)] for z in lv.numbers))
        kT = lv.etemp * KB_HARTREE * HARTREE
        np.testing.assert_allclose(2 * expit(-(lv.energies - lv.fermi) / kT), lv.occupations, atol=1e-6)
    e = np.array([-1.0, 0.0, 1.0])
    assert fermi_level(e, 2.0, 1e-4) == pytest.approx(-0.5, abs=1e-6)          # mid-gap between a filled and an empty level
    assert fermi_level(e, 3.0, 0.01) == pytest.approx(0.0, abs=1e-6)           # half-filled middle level


def test_pdos_integrals_and_total(si_levels):
    lv = si_levels
    E = np.linspace(lv.energies.min() - lv.fermi - 3, lv.energies.max() - lv.fermi + 3, 5000)
    g = levels_dos(lv, E, sigma=0.2, average_images=False)
    np.testing.assert_allclose(np.trapezoid(g, E, axis=1), 2 * lv.n_orbitals, rtol=1e-6)
    total = 2 * np.exp(-0.5 * ((E[None] - (lv.energies - lv.fermi)[:, None]) / 0.2) ** 2).sum(0) / (np.sqrt(2 * np.pi) * 0.2)
    np.testing.assert_allclose(g.sum(0), total, atol=1e-8 * total.max())


def test_occupied_integral_is_population(nacl_levels):
    lv = nacl_levels                                                          # gap 4 eV >> sigma
    E = np.linspace(lv.energies.min() - lv.fermi - 2, 0.0, 4000)
    g = levels_dos(lv, E, sigma=0.1, average_images=False)
    np.testing.assert_allclose(np.trapezoid(g, E, axis=1), lv.weights @ lv.occupations, atol=2e-3)


def test_images_and_symmetric_atoms(si_levels, nacl_levels):
    g = levels_dos(si_levels, average_images=False).reshape(8, 2, -1)
    np.testing.assert_allclose(g, np.broadcast_to(g[:1], g.shape), atol=1e-3 * g.max())
    gp = levels_dos(si_levels)
    np.testing.assert_allclose(gp[0], gp[1], atol=1e-3 * gp.max())          # both Si atoms of diamond
    np.testing.assert_allclose(gp, g.mean(0), atol=1e-12)
    gn = levels_dos(nacl_levels, average_images=False).reshape(-1, 2, gp.shape[1])
    np.testing.assert_allclose(gn, np.broadcast_to(gn[:1], gn.shape), atol=1e-3 * gn.max())
    assert abs(gn[0, 0] - gn[0, 1]).max() > 0.5                               # Na and Cl differ: the map does not mix atoms


def test_known_cases(nacl_levels):
    assert nacl_levels.gap > 2.0
    assert levels_dos(nacl_levels)[:, I0].max() < 1e-3
    g_al, lv_al = per_atom_dos(AL, min_length=7.0)
    assert g_al.shape == (1, DOS_POINTS) and g_al[0, I0] > 0.1


def test_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        smear([0.0], [[1.0]], dos_grid(), sigma=0.0)
    with pytest.raises(ValueError, match="mulliken"):
        xtb_levels(SI, reps=(1, 1, 1), projection="iao")
    with pytest.raises(ValueError, match="max_super_atoms"):
        xtb_levels(SI, min_length=10.0, max_super_atoms=20)
    with pytest.raises(ValueError, match="window"):
        dos_grid(10, (2.0, 1.0))


def test_charge_runaway_is_rejected():
    def au3ni(a):
        return Crystal(np.array([28, 79, 79, 79]), np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]), np.eye(3) * a)
    with pytest.raises(SCFError, match="unphysical atomic charges"):
        xtb_levels(au3ni(3.90), reps=(1, 1, 1), etemp=3000.0)       # converges to q(Ni) = -15.8 e
    lv = xtb_levels(au3ni(4.00), reps=(1, 1, 1), etemp=3000.0)
    assert -1.0 < lv.charges[0] < -0.3 and abs(lv.charges.sum()) < 1e-6


# --- store ----------------------------------------------------------------------------------------------------------
def test_store_resumes_and_records_failures(tmp_path):
    big = Crystal(np.array([6]), np.zeros((1, 3)), np.eye(3) * 1.5, id="too-big")
    kw = dict(min_length=5.0, chunk_size=1, progress=False, max_super_atoms=50)
    label_dos([SI], tmp_path, split="x", **kw)
    idx = label_dos([SI, big, NACL], tmp_path, split="x", **kw)
    assert list(idx.id) == ["Si", "too-big", "NaCl"] and list(idx.status) == ["ok", "failed", "ok"]
    assert "max_super_atoms" in idx.error.iloc[1]
    assert len(list(tmp_path.glob("shard_*.npz"))) == 2 and not list(tmp_path.glob(".*tmp"))
    idx = label_dos([SI, big, NACL], tmp_path, split="x", **kw)               # nothing left to do
    assert len(idx) == 3 and len(list(tmp_path.glob("shard_*.npz"))) == 2
    back = {c.id: c for c in load_dos_store(tmp_path)}
    assert sorted(back) == ["NaCl", "Si"]
    g, _ = per_atom_dos(NACL, min_length=5.0)
    np.testing.assert_allclose(back["NaCl"].atom_props["dos"], g, atol=2e-3 * g.max())
    np.testing.assert_array_equal(back["NaCl"].atomic_numbers, NACL.atomic_numbers)
    with pytest.raises(ValueError, match="unique"):
        label_dos([SI, SI], tmp_path / "dup", **kw)


def test_committed_store_loads_every_ok_row():
    "Every 'ok' row of the committed label store loads, including cells whose levels leave no gap (empty gap field -> NaN)."
    import csv
    from xtalnb.dos import _num
    from xtalnb.train import source_root
    store = source_root() / "data" / "dos"
    rows = [r for r in csv.DictReader(open(store / "index.csv")) if r["status"] == "ok"]
    got = load_dos_store(store)
    assert len(got) == len(rows) > 400
    assert all(c.atom_props["dos"].shape == (c.num_atoms, DOS_POINTS) for c in got)
    assert np.isnan(_num("")) and _num("0.25") == 0.25


def test_deferred_retry_ladder_finishes_in_a_second_pass(tmp_path, monkeypatch):
    "A first pass with retries=() records how far each failed SCF got; retry_failed='deferred' finishes exactly those."
    import collections
    import pandas as pd
    import xtalnb.dos as dos
    real, calls = dos.xtb_levels, collections.Counter()

    def flaky(crystal, damping=None, **kw):        # "NaCl" and "Al2" only converge with the damped mixer of the first retry
        calls[crystal.id, damping] += 1
        if crystal.id in ("NaCl", "Al2") and damping is None:
            raise SCFError("TBLiteRuntimeError: SCF not converged in 100 cycles")
        return real(crystal, damping=damping, **kw)
    monkeypatch.setattr(dos, "xtb_levels", flaky)
    kw = dict(min_length=5.0, chunk_size=1, progress=False)
    al2 = Crystal(AL.atomic_numbers, AL.frac_coords, AL.lattice, id="Al2")
    idx = label_dos([SI, NACL, al2], tmp_path, split="x", retries=(), **kw)          # pass 1: no retries
    assert list(idx.status) == ["ok", "failed", "failed"] and list(idx.attempts.astype(int)) == [1, 1, 1]
    # an old-style failure (full ladder, attempts not recorded) and a non-SCF failure must not be retried
    old = pd.DataFrame([dict(id="old", split="x", status="failed", attempts="", error="SCFError: GFN1-xTB SCF failed in every attempt"),
                        dict(id="big", split="x", status="failed", attempts="", error="ValueError: supercell too big")])
    pd.concat([dos.read_dos_index(tmp_path), old], ignore_index=True)[dos.INDEX_COLUMNS].to_csv(tmp_path / "index.csv", index=False)
    old_al, big = Crystal(AL.atomic_numbers, AL.frac_coords, AL.lattice, id="old"), Crystal(SI.atomic_numbers, SI.frac_coords, SI.lattice, id="big")
    crystals = [SI, NACL, al2, old_al, big]
    # pass 2, interrupted after one structure: the failure not yet retried keeps its row, so nothing is tried twice
    label_dos(crystals, tmp_path, split="x", retry_failed="deferred", limit=1, **kw)
    mid = dos.read_dos_index(tmp_path).set_index("id")
    assert sorted(mid.index) == ["Al2", "NaCl", "Si", "big", "old"]
    assert mid.loc["NaCl", "status"] == "ok" and mid.loc["Al2", "status"] == "failed" and mid.loc["Al2", "attempts"] == "1"
    idx = label_dos(crystals, tmp_path, split="x", retry_failed="deferred", **kw)         # pass 2, resumed
    got = idx.set_index("id")
    assert sorted(got.index) == ["Al2", "NaCl", "Si", "big", "old"]
    for i in ("NaCl", "Al2"):                       # rescued by the first retry; the failed first attempt was not run again
        assert got.loc[i, "status"] == "ok" and int(got.loc[i, "attempts"]) == 2
        assert calls[i, None] == 1 and calls[i, 0.1] == 1
    assert got.loc["old", "status"] == got.loc["big", "status"] == "failed"                  # not tried again (would succeed)
    g, lv = dos.per_atom_dos(NACL, min_length=5.0)              # same label and attempt count as a single full-ladder run
    assert lv.attempts == 2
    back = {c.id: c for c in load_dos_store(tmp_path)}
    np.testing.assert_allclose(back["NaCl"].atom_props["dos"], g, atol=2e-3 * g.max())
    idx2 = label_dos(crystals, tmp_path, split="x", retry_failed="deferred", **kw)   # nothing left
    assert len(idx2) == len(idx) == 5
    with pytest.raises(ValueError, match="retry_failed"):
        label_dos([SI], tmp_path, retry_failed="all", **kw)
    with pytest.raises(ValueError, match="skip"):
        dos.per_atom_dos(SI, min_length=5.0, retries=(), skip=1)       # a one-attempt ladder has nothing left after 1
