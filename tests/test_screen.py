"Tests for xtalnb.screen: Dask LocalCluster fan-out equals the serial path, resumable reruns, database round trip, bad input."
import importlib
import math
import warnings

import numpy as np
import pytest
from ase.build import bulk

from xtalnb.crystal import Crystal
from xtalnb import screen as S

R = importlib.import_module("xtalnb.relax")   # the module: `xtalnb.relax` at the top level is the function

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.filterwarnings("ignore")


def tiny():
    rng = np.random.default_rng(1)
    nacl = bulk("NaCl", "rocksalt", a=5.8)
    nacl.positions += rng.normal(0, 0.05, nacl.positions.shape)
    return [Crystal.from_atoms(bulk("Al", "fcc", a=4.1), id="al"), Crystal.from_atoms(nacl, id="nacl"),
            Crystal.from_atoms(bulk("Si", "diamond", a=5.5), id="si"), Crystal.from_atoms(bulk("Cu", "fcc", a=3.7), id="cu")]


def vol_per_atom(c):
    return c.volume / c.num_atoms


def stages():
    return [S.CompactnessWindow(0.05, 0.95), S.Relax(max_steps=15), S.FormationEnergyMax(0.5),
            S.Score(vol_per_atom, top=2)]


def test_dask_equals_serial(tmp_path):
    ser = S.Funnel(stages(), db=tmp_path / "serial.db").run(tiny(), progress=False)
    par = S.Funnel(stages(), db=tmp_path / "dask.db").run(tiny(), scheduler=2, progress=False)
    assert par.n_computed == ser.n_computed == 4
    assert par.counts.n.tolist() == ser.counts.n.tolist() == [4, 4, 4, 4, 2]
    a, b = ser.records.set_index("sid"), par.records.set_index("sid").loc[ser.records.sid]
    assert a.name.tolist() == b.name.tolist() == ["al", "nacl", "si", "cu"]     # input order kept
    for col in ("relax_status", "relax_steps", "failed_at", "passed", "rank", "n_passed"):
        assert a[col].tolist() == b[col].tolist(), col
    for col in ("compactness", "e_relaxed", "e_form", "score", "rmsd"):
        np.testing.assert_allclose(a[col].astype(float), b[col].astype(float), atol=1e-5, err_msg=col)


def test_rerun_skips_finished_and_resumes(tmp_path, monkeypatch):
    cells = tiny()
    f = S.Funnel(stages(), db=tmp_path / "c.db")
    first = f.run(cells[:2], progress=False)                # a "killed" campaign: only two done
    calls = []
    real = R.relax
    monkeypatch.setattr(R, "relax", lambda *a, **k: calls.append(1) or real(*a, **k))
    full = f.run(cells, progress=False)
    assert full.n_computed == 2 and len(calls) == 2         # only the missing two were relaxed
    calls.clear()
    again = f.run(cells, progress=False)
    assert again.n_computed == 0 and calls == []            # second run: no relaxation at all
    assert again.records.sid.tolist() == full.records.sid.tolist()
    assert again.records.e_relaxed.tolist()[:2] == first.records.e_relaxed.tolist()
    # another funnel (other threshold) in the same database gets its own rows
    other = S.Funnel(stages()[:2] + [S.FormationEnergyMax(-1.0)], db=tmp_path / "c.db").run(cells, progress=False)
    assert other.signature != f.signature and other.n_computed == 4
    db = S.open_db(tmp_path / "c.db")
    assert db.count(funnel=f.signature) == 4 and db.count(funnel=other.signature) == 4
    row = db.get(sid=full.records.sid[1], funnel=f.signature)
    assert row.formula == "NaCl" and math.isfinite(row.e_form) and row.relax_status in ("converged", "unconverged")
    assert np.array_equal(row.data["input"]["numbers"], cells[1].atomic_numbers)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown filter name"):
        S.Funnel(["spp", "nonsense"])
    with pytest.raises(ValueError, match="out of range"):
        S.make_filter(("e_hull", {"threshold": 35}))
    with pytest.raises(ValueError, match="not understood"):
        S.open_db("redis://localhost/0")
    with pytest.raises(ValueError, match="scheduler"):
        S._make_client(3.5)
    with pytest.raises(ValueError, match="not understood"):
        S._make_client("localhost:8786")
