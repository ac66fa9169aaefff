"Tests for xtalnb.relax: CHGNet relaxation records, RMSD closed forms, magnetic density, EOS (the hull is tested in tests/test_hull.py)."
import importlib
import math
import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.eos import EquationOfState, birchmurnaghan

from xtalnb.crystal import Crystal
R = importlib.import_module("xtalnb.relax")   # the module: `xtalnb.relax` at the top level is the function

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def rattled_nacl():
    a = bulk("NaCl", "rocksalt", a=5.9)          # 3 % too large and rattled
    a.positions += np.random.default_rng(0).normal(0, 0.08, a.positions.shape)
    return a


@pytest.fixture(scope="module")
def relaxed_nacl(rattled_nacl):
    return R.relax(Crystal.from_atoms(rattled_nacl, id="nacl"), fmax=0.05, trajectory=True, progress=False)


def test_relax_converges_lowers_energy(relaxed_nacl):
    r = relaxed_nacl
    assert (r.status, r.converged, r.id) == ("converged", True, "nacl")
    assert r.energy_per_atom < r.initial_energy_per_atom - 1e-3
    p = R.chgnet_model().predict_structure(r.crystal.to_structure(), task="efsm")   # independent single point
    assert abs(float(p["e"]) - r.energy_per_atom) < 2e-4
    assert np.linalg.norm(np.asarray(p["f"]), axis=1).max() < 0.05
    assert 5.5 < (4 * r.crystal.volume) ** (1 / 3) < 5.9                           # a(NaCl) = 5.64 Å expt
    assert len(r.trajectory["energy_per_atom"]) == r.n_steps + 1
    assert r.crystal.atom_props["magmom"].shape == (2,)


def test_failures_are_records(rattled_nacl):
    ov = rattled_nacl.copy()
    ov.positions[1] = ov.positions[0] + [0.2, 0.0, 0.1]
    huge = rattled_nacl.copy()
    huge.set_cell(huge.cell * 7, scale_atoms=True)
    out = R.relax([ov, huge], progress=False)
    assert [o.status for o in out] == ["overlap", "exploded"]
    assert "apart" in out[0].reason and not out[0].ok and math.isnan(out[0].energy_per_atom)
    t = R.relax(rattled_nacl, fmax=1e-4, timeout_s=1e-3, progress=False)
    assert t.status == "timeout" and "timeout" in t.reason
    u = R.relax(rattled_nacl, fmax=1e-4, max_steps=2, progress=False)
    assert (u.status, u.n_steps) == ("unconverged", 2)
    with pytest.raises(ValueError, match="fmax"):
        R.relax(rattled_nacl, fmax=-1)
    with pytest.raises(ValueError, match="expected a Crystal"):
        R.relax(["NaCl"])


def test_parallel_equals_serial(rattled_nacl):
    trio = [Crystal.from_atoms(bulk("Al", "fcc", a=4.2), id="al"), Crystal.from_atoms(rattled_nacl, id="nacl"),
            Crystal.from_atoms(bulk("Si", "diamond", a=5.6), id="si")]
    ser = R.relax(trio, fmax=0.05, progress=False)
    par = R.relax(trio, fmax=0.05, n_jobs=2, progress=False)
    assert [p.id for p in par] == ["al", "nacl", "si"]
    assert [p.status for p in par] == [s.status for s in ser] == ["converged"] * 3
    np.testing.assert_allclose([p.energy_per_atom for p in par], [s.energy_per_atom for s in ser], atol=1e-5)


def test_rmsd_closed_forms():
    rng = np.random.default_rng(5)
    base = Crystal([55, 17, 17, 8, 8, 8], rng.random((6, 3)), np.diag([4.2, 4.6, 5.1]))
    N, delta = base.num_atoms, np.array([0.1, 0.05, -0.07])
    moved = base.cart_coords.copy()
    moved[2] += delta
    pert = Crystal(base.atomic_numbers, moved @ np.linalg.inv(base.lattice), base.lattice)
    shift = Crystal(base.atomic_numbers, base.frac_coords + [0.3, 0.9, -0.2], base.lattice)
    for m in ("paired", "matcher"):
        assert R.rmsd(base, base, method=m) == pytest.approx(0, abs=1e-6)
        assert R.rmsd(base, shift, method=m) == pytest.approx(0, abs=1e-6)
        assert R.rmsd(base, pert, method=m) == pytest.approx(np.linalg.norm(delta) * math.sqrt(N - 1) / N, abs=1e-6)


def test_magnetic_density_hand_case():
    c = Crystal([26, 8], [[0, 0, 0], [0.5, 0.5, 0.5]], np.diag([2.0, 3.0, 5.0]))     # V = 30 Å³
    assert R.magnetic_density(c, magmoms=[3.0, -1.5]) == pytest.approx(4.5 / 30)
    with pytest.raises(ValueError, match="NaN"):
        R.magnetic_density(c, magmoms=[np.nan, 0])


def test_bulk_modulus():
    vs = 20 * (1 + np.linspace(-0.06, 0.06, 7))
    B = EquationOfState(vs, birchmurnaghan(vs, -5, 80 * R.GPA, 4.0, 20), eos="birchmurnaghan").fit()[2] / R.GPA
    assert B == pytest.approx(80, rel=1e-3)
    res = R.eos_fit(bulk("Cu"), relax_ions=False)
    assert res.status == "ok" and abs(res.bulk_modulus - 140) < 0.35 * 140    # experiment 137-140 GPa


def test_eos_fit_timeout():
    "A relaxation inside the E(V) fit that outruns `timeout_s` ends the fit with status 'timeout', not a hang or a number."
    a = bulk("Cu", cubic=True)
    a.rattle(0.05, seed=0)                       # forces well above fmax, so the first relaxation needs more than one step
    res = R.eos_fit(a, timeout_s=1e-9)
    assert res.status == "timeout" and np.isnan(res.bulk_modulus), (res.status, res.reason)
    with pytest.raises(ValueError, match="timeout_s"):
        R.eos_fit(bulk("Cu"), timeout_s=0)
