"Tests for xtalnb.conditional and the conditional-generation entry points on the shipped adapter checkpoint (bad input, γ endpoints)."
import warnings

import numpy as np
import pytest
import torch

from xtalnb.sampling import generate
from xtalnb.checkpoint import load_model

ADAPTER = "denovo-mp20-adapter-C"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapter():
    return load_model(ADAPTER)


@pytest.fixture(scope="module")
def base(adapter):
    "The base model the adapter was fine-tuned on, by the name its card records (checked against the recorded SHA-256)."
    net, d, card = load_model(adapter[2]["base_model"])
    assert card["sha256"] == adapter[2]["base_sha256"], "the shipped base is not the one the adapter was trained on"
    return net, d, card


def test_unknown_property_is_refused_with_the_known_list(adapter):
    with pytest.raises(ValueError, match=r"unknown property 'compact'.*compactness"):
        generate(n=1, model=adapter, cond={"compact": 0.5}, steps=2, progress=False)


def test_condition_the_model_was_not_trained_on_is_refused(adapter, base):
    with pytest.raises(ValueError, match=r"not trained on condition 'band_gap'.*\['compactness'\]"):
        generate(n=1, model=adapter, cond={"band_gap": 2.0}, steps=2, progress=False)
    with pytest.raises(ValueError, match="its conditions are none"):          # the unconditional model: nothing is silently ignored
        generate(n=1, model=base, cond={"compactness": 0.5}, steps=2, progress=False)
    with pytest.raises(ValueError, match="guidance was requested"):
        generate(n=1, model=base, guidance=2.0, steps=2, progress=False)
    with pytest.raises(ValueError, match="needs condition values"):
        generate(n=1, model=adapter, guidance=2.0, steps=2, progress=False)


def test_out_of_range_target_warns_with_the_training_range(adapter):
    lo, hi = adapter[2]["condition_ranges"]["compactness"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        generate(n=1, model=adapter, cond={"compactness": hi + 0.5}, guidance=2.0, steps=2, progress=False)
    msgs = [str(x.message) for x in w if "training range" in str(x.message)]
    assert len(msgs) == 1 and f"[{lo:.4g}, {hi:.4g}]" in msgs[0], msgs
    with warnings.catch_warnings(record=True) as w:                            # inside the range: no warning
        warnings.simplefilter("always")
        generate(n=1, model=adapter, cond={"compactness": 0.6}, guidance=2.0, steps=2, progress=False)
    assert not [x for x in w if "training range" in str(x.message)]


def test_adapter_at_gamma_zero_is_the_base_model(adapter, base):
    "Frozen base weights + the adapters' null path: γ = 0 generation reproduces the unconditional model (same seed)."
    a = generate(n=3, model=adapter, cond={"compactness": 0.4}, guidance=0.0, steps=4, seed=7, progress=False, return_crystals=True)
    b = generate(n=3, model=base, steps=4, seed=7, progress=False, return_crystals=True)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x.atomic_numbers.tolist() == y.atomic_numbers.tolist()
        np.testing.assert_allclose(x.lattice, y.lattice, rtol=1e-3, atol=1e-3)
    # the base weights inside the adapter checkpoint are the shipped ones
    sa, sb = adapter[0].state_dict(), base[0].state_dict()
    for k, v in sb.items():
        torch.testing.assert_close(sa[k], v, rtol=1e-5, atol=1e-6)


def test_condition_value_changes_the_network_output(adapter):
    "The trained adapters are not the identity any more: the conditional output depends on the target value."
    net, d, _ = adapter
    g = torch.Generator().manual_seed(0)
    na = torch.tensor([4, 6])
    st, bidx = d.prior(na, generator=g)
    t = d.model_time(torch.tensor([300, 300]))
    with torch.no_grad():
        o1 = net(st["types"], st["frac"], st["lattice"], na, bidx, t, cond={"compactness": torch.tensor([0.35, 0.35])})
        o2 = net(st["types"], st["frac"], st["lattice"], na, bidx, t, cond={"compactness": torch.tensor([0.82, 0.82])})
        o0 = net(st["types"], st["frac"], st["lattice"], na, bidx, t, cond={"compactness": torch.tensor([float("nan")] * 2)})
    for k in ("lattice", "frac"):
        assert (o1[k] - o2[k]).abs().max() > 1e-3 and (o1[k] - o0[k]).abs().max() > 1e-3, k


def test_bandgap_adapter_refuses_other_conditions_and_reduces_to_base_at_gamma_zero(base):
    net = load_model("denovo-mp20-adapter-bandgap")
    assert net[2]["conditions"] == ["band_gap"] and net[2]["finetune_mode"] == "adapter"
    with pytest.raises(ValueError, match=r"not trained on condition 'compactness'.*\['band_gap'\]"):
        generate(n=1, model=net, cond={"compactness": 0.6}, steps=2, progress=False)
    a = generate(n=2, model=net, cond={"band_gap": 3.0}, guidance=0.0, steps=3, seed=3, progress=False, return_crystals=True)
    b = generate(n=2, model=base, steps=3, seed=3, progress=False, return_crystals=True)
    for x, y in zip(a, b):
        assert x.atomic_numbers.tolist() == y.atomic_numbers.tolist()
        np.testing.assert_allclose(x.lattice, y.lattice, rtol=1e-3, atol=1e-3)


def test_shipped_bandgap_regressor_beats_the_constant_predictor_on_held_out_crystals():
    "The regressor that judges band-gap samples: on 300 MP-20 test crystals its MAE is well below predicting the training median."
    from xtalnb.conditional import load_regressor
    from xtalnb.data import load_dataset
    reg, card = load_regressor("bandgap-regressor-mp20")
    assert card["prop"] == "band_gap" and card["test_mae_eV"] < card["test_mae_constant_median_eV"]
    te = load_dataset("mp20_subset", "test", limit=300, progress=False)
    y = np.array([c.props["band_gap"] for c in te])
    p = reg.predict(te)
    assert p.shape == y.shape and (p >= 0).all()
    mae, const = np.abs(p - y).mean(), np.abs(y - 0.0).mean()          # the training median gap is 0 eV (68 % metals)
    assert mae < 0.6 * const, (mae, const)


def test_new_condition_sources_hhi_magnetic_density_bulk(tmp_path):
    "HHI exact (pymatgen's production HHI), magnetic density from CHGNet magmoms with a cache by id, bulk modulus only from AFLOW."
    import pandas as pd
    from pymatgen.analysis.hhi import HHIModel
    from xtalnb.conditional import attach_conditions, condition_specs
    from xtalnb.data import load_dataset
    from xtalnb.relax import magnetic_density
    ds = load_dataset("mp20_subset", "train", limit=3, progress=False)
    cache = tmp_path / "md.csv"
    lab = attach_conditions(ds[:2], ["hhi", "magnetic_density"], caches={"magnetic_density": cache})
    for c0, c in zip(ds, lab):
        ref = HHIModel().get_hhi_production(c0.to_structure().composition)
        assert (np.isnan(c.props["hhi"]) and ref is None) or c.props["hhi"] == pytest.approx(ref, rel=1e-12)
        assert c.props["magnetic_density"] == pytest.approx(magnetic_density(c0), rel=1e-6, abs=1e-9)
    assert len(pd.read_csv(cache)) == 2
    pd.DataFrame({"id": [ds[0].id, ds[1].id], "magnetic_density": [0.25, 0.5]}).to_csv(cache, index=False)   # cached values are used
    assert [c.props["magnetic_density"] for c in attach_conditions(ds[:2], "magnetic_density", caches={"magnetic_density": cache})] == [0.25, 0.5]
    specs, ranges = condition_specs(attach_conditions(ds[:2], "magnetic_density", caches={"magnetic_density": cache}), ["magnetic_density"])
    assert ranges["magnetic_density"] == [0.25, 0.5] and specs[0]["kind"] == "scalar"
    with pytest.raises(ValueError, match=r"no 'bulk_modulus'.*AFLOW"):
        attach_conditions(ds, ["bulk_modulus"])
    af = load_dataset("aflow_bulk_modulus", "train", limit=2, progress=False)
    assert [c.props["bulk_modulus"] for c in attach_conditions(af, "bulk_modulus")] == [c.props["bulk_modulus"] for c in af]
    with pytest.raises(ValueError, match="unknown condition source 'magdens'.*magnetic_density"):
        attach_conditions(ds, ["magdens"])


def test_joint_adapter_C_MLED_is_base_at_gamma_zero_and_uses_both_conditions():
    "The (C, M_LED) adapter: trained on both; γ = 0 reproduces the base model; each condition changes the output; a missing one is null."
    net, d, card = load_model("denovo-mp20-adapter-C-MLED")
    base = load_model(card["base_model"])
    assert base[2]["sha256"] == card["base_sha256"], "the shipped base is not the one the adapter was trained on"
    assert card["conditions"] == ["compactness", "m_led"] and card["finetune_mode"] == "adapter"
    with pytest.raises(ValueError, match=r"not trained on condition 'band_gap'"):
        generate(n=1, model=(net, d, card), cond={"compactness": 0.7, "band_gap": 1.0}, steps=2, progress=False)
    a = generate(n=2, model=(net, d, card), cond={"compactness": 0.7, "m_led": 9.0}, guidance=0.0, steps=3, seed=5, progress=False,
                 return_crystals=True)
    b = generate(n=2, model=base, steps=3, seed=5, progress=False, return_crystals=True)
    for x, y in zip(a, b):
        assert x.atomic_numbers.tolist() == y.atomic_numbers.tolist()
        np.testing.assert_allclose(x.lattice, y.lattice, rtol=1e-3, atol=1e-3)
    g = torch.Generator().manual_seed(0)
    na = torch.tensor([4, 6])
    st, bidx = d.prior(na, generator=g)
    t = d.model_time(torch.tensor([300, 300]))
    def out(c, m):
        with torch.no_grad():
            return net(st["types"], st["frac"], st["lattice"], na, bidx, t, cond={"compactness": torch.tensor([c, c]), "m_led": torch.tensor([m, m])})
    ref, other_c, other_m = out(0.7, 9.0), out(0.4, 9.0), out(0.7, 10.5)
    nan = float("nan")
    only_c = out(0.7, nan)
    for k in ("lattice", "frac"):
        assert (ref[k] - other_c[k]).abs().max() > 1e-4 and (ref[k] - other_m[k]).abs().max() > 1e-4, k
        assert (ref[k] - only_c[k]).abs().max() > 1e-5, k
