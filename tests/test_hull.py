"Tests for xtalnb.hull: formation energies and hull arithmetic against hand computations, resumable entries, the offset and the default hull."
import json
import warnings

import pytest
from ase.build import bulk

from xtalnb import hull as H
from xtalnb import relax as R
from xtalnb.crystal import Crystal

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.filterwarnings("ignore")


def test_formation_energy_closed_form_and_lazy_refs(tmp_path):
    assert H.formation_energy_per_atom("NaCl", -4.0, refs={"Na": -1.0, "Cl": -2.0}) == pytest.approx(-2.5)
    assert H.formation_energy_per_atom({"Fe": 2, "O": 3}, -7.0, refs={"Fe": -8.0, "O": -5.0}) == pytest.approx(-7.0 + 31 / 5)
    with pytest.raises(ValueError, match="Cl"):
        H.formation_energy_per_atom("NaCl", -4.0, refs={"Na": -1.0})
    p = tmp_path / "refs.json"
    refs = H.elemental_references(["Pd"], path=p)
    pd_ = json.loads(p.read_text())["elements"]["Pd"]
    assert [c["source"] for c in pd_["candidates"]] == ["ase:fcc(reference)", "proto:bcc", "proto:hcp"]
    s = pd_["structure"]
    ref = Crystal(s["atomic_numbers"], s["frac_coords"], s["lattice"])
    assert H.formation_energy_per_atom(ref, R.single_point(ref)["energy_per_atom"], refs=refs) == pytest.approx(0, abs=1e-3)
    with pytest.raises(ValueError, match="Ag"):
        H.elemental_references(["Ag"], path=p, build=False)


def test_hull_hand_computation():
    h = H.ReferenceHull([dict(composition={"Li": 1}, energy_per_atom=-2.0), dict(composition={"O": 1}, energy_per_atom=-5.0),
                         dict(composition={"Li": 2, "O": 1}, energy_per_atom=-6.0)])
    assert h.e_above_hull("Li2O", -6.0) == (pytest.approx(0.0, abs=1e-9), "ok")
    # LiO at x_O = 1/2 lies between Li2O (x=1/3, -6) and O (x=1, -5): E_hull = -6 + (1/2-1/3)/(2/3) * 1 = -5.75
    assert h.e_above_hull("LiO", -5.5).e_above_hull == pytest.approx(0.25)
    # Li3O at x_O = 1/4 between Li (0, -2) and Li2O (1/3, -6): E_hull = -2 - 4 * (1/4)/(1/3) = -5
    assert h.e_above_hull("Li3O", -5.2).e_above_hull == pytest.approx(-0.2)
    assert h.e_above_hull("LiXeO", -5.0).status == "missing_elements:Xe"
    assert H.e_hull("LiO", -5.5, hull=h).e_above_hull == pytest.approx(0.25)


def test_hull_entries_resume(tmp_path):
    cells = [Crystal.from_atoms(bulk("Al", "fcc", a=4.0), id="a"), Crystal.from_atoms(bulk("Cu", "fcc", a=3.7), id="b")]
    p = H.build_hull_entries(tmp_path, chunk=1, crystals=cells[:1], progress=False)
    first = H.load_hull_entries(p)
    H.build_hull_entries(tmp_path, chunk=1, crystals=cells, progress=False)
    ents = H.load_hull_entries(p)
    assert [e["id"] for e in ents] == ["a", "b"] and ents[0] == first[0]
    h = H.ReferenceHull.from_dir(tmp_path, refs=False)
    assert h.elements == {"Al", "Cu"}
    assert h.e_above_hull("Al", ents[0]["energy_per_atom"]).e_above_hull == pytest.approx(0, abs=1e-9)


def test_offset_applied_once_and_errors():
    rows = [dict(composition={"Li": 1}, energy_per_atom=0.0), dict(composition={"O": 1}, energy_per_atom=0.0),
            dict(composition={"Li": 2, "O": 1}, energy_per_atom=-2.0)]
    refs = {"Li": -1.9, "O": -4.9}
    h = H.ReferenceHull(rows, energy="formation", correction=dict(offsets={"all": -0.05, "oxide": -0.08}, by_class=True))
    e = -2.1 + (2 * -1.9 - 4.9) / 3                      # CHGNet E_form = -2.1 eV/atom
    assert H.e_hull("Li2O", e, hull=h, refs=refs, correct=False).e_above_hull == pytest.approx(-0.1)
    assert H.e_hull("Li2O", e, hull=h, refs=refs).e_above_hull == pytest.approx(-0.02)
    assert h.e_above_hull("Li2O", -2.0).e_above_hull == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="at least one entry"):
        H.ReferenceHull([])
    with pytest.raises(ValueError, match="not chemical elements"):
        h.e_above_hull("LiQq", -1.0)
    with pytest.raises(ValueError, match="unknown hull kind"):
        H.default_hull("nope")


def test_default_hull_covers_mp20():
    hull = H.default_hull()
    assert hull.energy == "formation" and hull.version.startswith(H.HULL_VERSIONS["dft"]) and hull.correction is not None
    refs = H.elemental_references(sorted(hull.elements), build=False)     # a CHGNet reference for every element of MP-20
    assert len(refs) == len(hull.elements) >= 89
    assert H.e_hull("NaOg", -1.0).status == "missing_elements:Og"
