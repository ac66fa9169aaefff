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
                        xtb_levels, supercell_matrix, choose_supercell, reps_str, read_dos_index, INDEX_COLUMNS)
from xtalnb.dos import _hnf_matrices

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


def test_hermite_forms_enumerate_every_sublattice_once():
    "Hermite forms of determinant n: as many as sublattices of index n of Z^3 (OEIS A001001), pairwise different lattices."
    assert [len(_hnf_matrices(n)) for n in range(1, 11)] == [1, 7, 13, 35, 31, 91, 57, 155, 130, 217]
    for n in (4, 6):
        H = _hnf_matrices(n)
        assert (np.rint(np.linalg.det(H)) == n).all()
        for a in range(len(H)):                     # H_a and H_b span the same lattice iff H_a H_b^-1 is integer
            R = H[a] @ np.linalg.inv(H[np.arange(len(H)) != a])
            assert not np.all(np.abs(R - np.rint(R)) < 1e-9, axis=(1, 2)).any()


def test_smallest_supercell_closed_form_and_brute_force():
    # fcc Al primitive (plane spacing a/sqrt3): the conventional cube (4 cells, spacing a) is the smallest reaching 4.0 Å
    P = supercell_matrix(AL.lattice, 4.0)
    assert round(np.linalg.det(P)) == 4
    np.testing.assert_allclose(plane_spacings(P @ AL.lattice), 4.05, atol=1e-9)
    # simple cubic, a = 3 Å: at 6 Å the diagonal 2x2x2 meets the volume bound (8 cells) and is returned as is; at 7 Å the
    # diagonal 3x3x3 (27 cells) loses to a 14-cell supercell with all three spacings 3 sqrt(78)/... = 7.10 Å
    assert np.array_equal(supercell_matrix(np.eye(3) * 3.0, 6.0), np.diag([2, 2, 2]))
    P = supercell_matrix(np.eye(3) * 3.0, 7.0)
    assert round(np.linalg.det(P)) == 14 and plane_spacings(P * 3.0).min() >= 7.0
    # random oblique cells against an exhaustive search over all matrices with entries in {-1, 0, 1, 2}
    rng = np.random.default_rng(1)
    M = np.array(np.meshgrid(*[[-1, 0, 1, 2]] * 9, indexing="ij")).reshape(9, -1).T.reshape(-1, 3, 3).astype(float)
    det = np.rint(np.linalg.det(M))
    M, det = M[det > 0], det[det > 0]
    for _ in range(3):
        L = np.eye(3) * rng.uniform(2.5, 4.0, 3) + rng.uniform(-1.5, 1.5, (3, 3))
        V = abs(np.linalg.det(L))
        L_min = 1.7 * V ** (1 / 3)
        P = supercell_matrix(L, L_min)
        n = round(np.linalg.det(P))
        assert plane_spacings(P @ L).min() >= L_min - 1e-9                    # valid
        assert n >= np.ceil(L_min ** 3 / V - 1e-9)                            # respects the volume bound
        B = M @ L
        Vb = np.abs(np.linalg.det(B))
        d = np.stack([Vb / np.linalg.norm(np.cross(B[:, (i + 1) % 3], B[:, (i + 2) % 3]), axis=1) for i in range(3)], 1)
        ok = d.min(1) >= L_min - 1e-9
        assert ok.any() and n <= det[ok].min()                                # no box matrix is smaller
        assert n <= np.prod(supercell_repeats(L, L_min))                      # never worse than diagonal
    with pytest.raises(ValueError, match="singular lattice"):
        supercell_matrix(np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]), 5.0)


def test_general_supercell_images_and_rules():
    P = [[1, 1, 0], [0, 1, 1], [1, 0, 1]]                                          # index 2
    z, pos, Ls, amap = make_supercell(NACL, P)
    assert len(z) == 4 and list(amap) == [0, 1, 0, 1] and list(z) == [11, 17, 11, 17]
    np.testing.assert_allclose(Ls, np.array(P) @ NACL.lattice)
    shift = np.linalg.solve(NACL.lattice.T, (pos - NACL.cart_coords[amap]).T).T    # images differ by primitive lattice vectors
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)
    f = np.linalg.solve(Ls.T, pos.T).T                                             # and are distinct modulo the supercell
    df = (f[0] - f[2] + 0.5) % 1.0 - 0.5
    assert np.abs(df).max() > 0.1
    with pytest.raises(ValueError, match="positive determinant"):
        make_supercell(NACL, [[1, 0, 0], [0, 1, 0], [0, 0, -1]])
    with pytest.raises(ValueError, match="supercell must be"):
        choose_supercell(NACL, 7.0, "cubic")
    # auto: the diagonal supercell up to 100 atoms (Si: 2 x 27), else the smallest (Al at 10 Å: 125 diagonal -> 63)
    assert choose_supercell(SI, 7.0, "auto") == supercell_repeats(SI.lattice, 7.0)
    big = choose_supercell(AL, 10.0, "auto")
    assert round(np.linalg.det(np.array(big))) == 63 and choose_supercell(AL, 10.0, "diagonal") == (5, 5, 5)
    assert reps_str((3, 3, 2)) == "3x3x2" and reps_str(P) == "1 1 0;0 1 1;1 0 1"


def test_collapsed_cell_fails_before_building_its_supercell():
    "A generated cell squashed to 1 mÅ needs ~10^11 images at 7 Å: a clear error at once, not an out-of-memory kill."
    flat = Crystal(np.array([28, 79]), np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.diag([1e-3, 1e-3, 4.0]), id="flat")
    with pytest.raises(ValueError, match="max_super_atoms=80"):
        xtb_levels(flat, min_length=7.0, max_super_atoms=80)
    with pytest.raises(ValueError, match="max_super_atoms=80"):
        xtb_levels(flat, min_length=7.0, max_super_atoms=80, supercell="diagonal")
    reps = supercell_repeats(flat.lattice, 7.0)            # the search gives up at max_cells (default 200) and returns the diagonal
    assert np.array_equal(supercell_matrix(flat.lattice, 7.0), np.diag(reps)) and reps[0] == 7000


def test_same_supercell_lattice_in_another_basis_gives_the_same_dos():
    "A 2x2x1 Si supercell and the same lattice spanned by a sheared integer basis: identical Γ-point per-atom DOS."
    a = xtb_levels(SI, reps=(2, 2, 1))
    b = xtb_levels(SI, reps=[[2, 2, 0], [0, 2, 0], [0, 0, 1]])
    assert len(b.numbers) == len(a.numbers) == 8
    # same up to tblite's basis-dependent lattice-sum truncation and SCF tolerance (4e-5 eV measured); a wrong image set or atom
    # map would move levels by tenths of an eV
    np.testing.assert_allclose(np.sort(b.energies), np.sort(a.energies), atol=2e-4)
    ga, gb = levels_dos(a), levels_dos(b)
    np.testing.assert_allclose(gb, ga, atol=2e-3 * ga.max())


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
    big = Crystal(np.array([6]), np.zeros((1, 3)), np.eye(3) * 1.0, id="too-big")   # 5 Å needs >= 125 cells
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
    from xtalnb.utils import source_root
    store = source_root() / "data" / "dos"
    rows = [r for r in csv.DictReader(open(store / "index.csv")) if r["status"] == "ok"]
    got = load_dos_store(store)
    assert len(got) == len(rows) > 400
    assert all(c.atom_props["dos"].shape == (c.num_atoms, DOS_POINTS) for c in got)
    assert np.isnan(_num("")) and _num("0.25") == 0.25


def test_relabelled_id_loads_once(tmp_path):
    "A label redone after its index row was dropped lives in a new shard; the stale copy in the old shard is not loaded."
    kw = dict(min_length=3.0, chunk_size=2, progress=False)
    label_dos([NACL, SI], tmp_path, split="x", **kw)
    idx = read_dos_index(tmp_path)
    idx[idx.id != "NaCl"][INDEX_COLUMNS].to_csv(tmp_path / "index.csv", index=False)
    idx = label_dos([NACL, SI], tmp_path, split="x", **kw)
    assert sorted(idx.id) == ["NaCl", "Si"] and idx.set_index("id").loc["NaCl", "shard"] == "shard_00001.npz"
    got = load_dos_store(tmp_path)
    assert sorted(c.id for c in got) == ["NaCl", "Si"]


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
