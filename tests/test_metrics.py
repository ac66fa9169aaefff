"Tests for xtalnb.metrics, xtalnb.matching and xtalnb.evaluation on hand-made structures with known answers, plus a small real-data check of the exact fast matcher."
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.structure_matcher import StructureMatcher

from xtalnb.crystal import Crystal
from xtalnb import evaluation as E
from xtalnb import matching as MT
from xtalnb import metrics as M

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.filterwarnings("ignore")


def rocksalt(a=5.64, A="Na", B="Cl"):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [A, B], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl(a=4.1, A="Cs", B="Cl"):
    return Structure(Lattice.cubic(a), [A, B], [[0, 0, 0], [0.5, 0.5, 0.5]])


def perovskite(a=3.905):
    return Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


def spinel():
    # MgAl2O4, Fd-3m origin choice 2: Mg 8a (tetrahedral), Al 16d (octahedral), O 32e (u = 0.2624)
    return Structure.from_spacegroup(227, Lattice.cubic(8.08), ["Mg", "Al", "O"],
                                     [[0.125, 0.125, 0.125], [0.5, 0.5, 0.5], [0.2624, 0.2624, 0.2624]])


def test_compactness_nacl_by_hand():
    # 4 Na (r = 1.80 Å) + 4 Cl (r = 1.00 Å) in a 5.64 Å cube
    expected = 4 * (4 / 3) * math.pi * (1.8 ** 3 + 1.0 ** 3) / 5.64 ** 3
    assert M.compactness(rocksalt()) == pytest.approx(expected, rel=1e-12)
    assert M.compactness(Crystal.from_structure(rocksalt())) == pytest.approx(expected, rel=1e-9)


def test_identical_structures_match_with_zero_rmse():
    s = perovskite()
    matched, rmse, comp, timed_out = MT.csp_match(s, s.copy())
    assert matched and comp and not timed_out and rmse == pytest.approx(0.0, abs=1e-10)
    # a different composition is neither a match nor a composition match
    m, r, c, _ = MT.csp_match(rocksalt(), s)
    assert (m, c) == (False, False) and np.isnan(r)


def test_rmse_of_single_displacement_by_hand():
    s = perovskite(); d = s.copy(); d.translate_sites([1], [0.2 / 3.905, 0, 0])   # Ti moved 0.2 Å
    u = np.zeros((5, 3)); u[1, 0] = 0.2; u -= u.mean(0)
    expected = np.sqrt((u ** 2).sum(1).mean()) / (s.volume / 5) ** (1 / 3)
    assert MT.csp_match(d, s)[1] == pytest.approx(expected, rel=1e-6)


def test_short_contact_is_invalid():
    bad = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.06, 0, 0]])   # 0.3 Å apart
    assert not M.structural_validity(bad)
    assert M.min_distance(bad) == pytest.approx(0.3)
    assert M.structural_validity(rocksalt())


def test_smact_validity():
    assert M.smact_validity("NaCl") and M.smact_validity("Fe2O3") and M.smact_validity("MgAl2O4")
    assert not M.smact_validity("NaCl2")
    assert M.smact_validity("Cu3Au")   # alloy


def test_m_led_rocksalt_low_mixed_higher():
    led_rs = M.m_led(rocksalt())
    assert led_rs < M.m_led(perovskite()) - 1.0
    assert led_rs < M.m_led(spinel()) - 0.5


def test_complexity_single_wyckoff_site_is_zero():
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])
    assert M.complexity_per_atom(cu) == pytest.approx(0.0, abs=1e-12)
    assert M.complexity_per_atom(rocksalt()) == pytest.approx(1.0)
    # spinel primitive cell: 2 Mg (8a), 4 Al (16d), 8 O (32e) -> p = (1, 2, 4)/7
    p = np.array([2, 4, 8]) / 14
    assert M.complexity_per_atom(spinel()) == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-9)


def test_fast_matching_equals_naive_on_hand_made_set():
    refs = [rocksalt(), rocksalt(4.2, "Mg", "O"), cscl(), perovskite(), cscl(3.0, "Na", "Cl")]
    j = perovskite(); j.perturb(0.04, min_distance=0.01)
    queries = [rocksalt(5.1), cscl(4.2), j, rocksalt(4.8, "Ca", "O"), rocksalt().get_primitive_structure()]
    idx = MT.MatchIndex(refs)
    fast = [bool(r["matches"]) for r in idx.query_many(queries)]
    assert fast == [MT.naive_any_match(q, refs) for q in queries] == [True, True, True, False, True]
    anon = MT.MatchIndex(refs, anonymous=True)
    assert anon.query(rocksalt(4.8, "Ca", "O"), first_only=False)["matches"] == [0, 1]


def _mp20(split, n):
    "First n structures of the MP-20 subset split ('train' = train + val); xtalnb.data when available, else the shared CSV."
    try:
        from xtalnb.data import load_dataset
        return [c.to_structure() for c in load_dataset("mp20_subset", split, limit=n, progress=False)]
    except ImportError:
        pass
    root = next((p / ".." / "shared" / "data" / "mp_20_partial" for p in [Path(__file__).resolve().parent.parent, *Path.cwd().parents]
                 if (p / ".." / "shared" / "data" / "mp_20_partial").exists()), None)
    if root is None: pytest.skip("shared MP-20 subset not available on this machine")
    cifs = pd.read_csv(root / f"{split}.csv.gz", usecols=["cif"], nrows=n)["cif"]
    return [Structure.from_str(c, fmt="cif") for c in cifs]


def test_fast_matching_equals_naive_on_real_sample():
    refs = _mp20("train", 300)
    queries = _mp20("test", 12) + [r.copy() for r in refs[:4]]
    for q in queries[-4:]: q.perturb(0.03, min_distance=0.005)
    idx = MT.MatchIndex(refs)
    fast = [bool(r["matches"]) for r in idx.query_many(queries)]
    assert fast == [MT.naive_any_match(q, refs) for q in queries]
    assert all(fast[-4:])


def test_shipped_spp_table_and_real_structures():
    tab = M.load_spp()
    test = _mp20("test", 30)
    scores = np.array([tab.score(s) for s in test])
    assert np.mean(scores <= tab.threshold) >= 0.8
    squeezed = [Structure(s.lattice.matrix * 0.85, s.species, s.frac_coords) for s in test[:8]]
    assert np.mean([tab.score(s) for s in squeezed]) > scores[:8].mean() + 0.5


def test_prototypes_and_frameworks():
    assert MT.match_prototype(rocksalt(4.2, "Mg", "O")).startswith("AB_cF8_225_a_b")
    fw = MT.FrameworkIndex([rocksalt(), rocksalt(4.2, "Mg", "O"), cscl(), perovskite()])
    assert fw.counts.tolist() == [2, 1, 1]
    assert fw.rank(rocksalt(6.0, "K", "Br")) == 0 and fw.rank(spinel()) == -1


def test_evaluate_table_and_errors(tmp_path):
    tab = M.SPPTable.build([rocksalt(), perovskite(), cscl()], n_folds=1)
    structs = [rocksalt(), perovskite(), Crystal.from_structure(cscl())]
    df, summary = E.evaluate(structs, reference=[rocksalt()], spp_table=tab, descriptors=("compactness", "complexity", "spp"),
                             e_hull=[0.0, 0.05, 0.3], out=tmp_path / "t.csv")
    assert (tmp_path / "t.csv").exists() and len(pd.read_csv(tmp_path / "t.csv")) == 3
    assert df["novel"].tolist() == [False, True, True]
    assert df["sun"].tolist() == [0.0, 1.0, 0.0]
    assert summary["struct_valid"] == 100.0
    with pytest.raises(ValueError, match="pymatgen Structures or xtalnb Crystals"): E.evaluate(["NaCl"])
    with pytest.raises(ValueError, match="needs targets"): E.evaluate(structs, task="csp")
    with pytest.raises(ValueError, match="unknown descriptors"): E.evaluate(structs, descriptors=("foo",))
    with pytest.raises(ValueError, match="one value per structure"): E.evaluate(structs, descriptors=(), e_hull=[0.0])
    with pytest.raises(ValueError, match="exact only"): MT.MatchIndex([rocksalt()], StructureMatcher(allow_subset=True))
