"Tests for xtalnb.guidance, .classifier, .hard_constraints and .constraint_guidance: CFG mixes, score-unit conversion, hard constraints on the shipped model, constraint penalties."
import warnings

import numpy as np
import pytest
import torch

from xtalnb.crystal import Crystal, CrystalBatch
from xtalnb.denoiser import Denoiser
from xtalnb.diffusion import NUM_TYPES, CrystalDiffusion
from xtalnb.guidance import ClassifierFreeGuidance, cfg_mix_logits, check_conditions, field_scores
from xtalnb.classifier import ClassifierGuidance
from xtalnb.constraint_guidance import (
    ConstraintGuidance, ConstraintSet, CoordinationNumber, Density, Elements, LatticeAngles, LatticeLengths,
    PairDistance, VolumePerAtom, lattice_angles, min_image_distances, perovskite_ABX3,
)
from xtalnb.hard_constraints import FixAtoms, FixSites, chemical_system, partial_composition
from xtalnb.sampling import SampleContext, SamplerHooks, combine_hooks, sample

SMALL = dict(hidden=16, layers=1, num_freqs=2, time_dim=8)
SPECS = [{"name": "band_gap", "kind": "scalar", "range": [0.0, 6.0]}]
FAMILIES = {"diffcsp": {}, "mattergen": dict(type_input="tokens", type_output="logits", lattice_output="symmetric")}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped():
    from xtalnb.checkpoint import load_model
    net, d, card = load_model("denovo-mp20")
    return net, d


def rocksalt(a, z1=11, z2=17):
    return Crystal([z1] * 4 + [z2] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.5, .5, .5], [.5, 0, 0], [0, .5, 0],
                                         [0, 0, .5]], np.eye(3) * a)


def random_crystals(n, seed=0, max_atoms=6):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(2, max_atoms + 1))
        L = np.diag(rng.uniform(3.5, 6.0, 3)) + rng.uniform(-0.8, 0.8, (3, 3))
        if np.linalg.det(L) < 0: L[0] *= -1
        out.append(Crystal(rng.choice([8, 11, 17, 22, 38], k), rng.random((k, 3)), L))
    return out


# ---------------------------------------------------------------- classifier-free guidance
@pytest.mark.parametrize("fam", list(FAMILIES))
def test_cfg_gamma_endpoints_and_amplification(fam):
    d = CrystalDiffusion(fam, T=30, n_mc=200)
    torch.manual_seed(3)
    m = Denoiser(**SMALL, **FAMILIES[fam], cond_specs=SPECS).eval()
    g = torch.Generator().manual_seed(0)
    st, bidx = d.prior(torch.tensor([3, 2]), generator=g)
    ctx = SampleContext(d, torch.tensor([3, 2]), bidx, g, {"band_gap": torch.tensor([0.5, 4.0])})
    t = torch.tensor([11, 4])
    with torch.no_grad():
        c, u = m.forward_cfg(st["types"], st["frac"], st["lattice"], ctx.num_atoms, bidx, d.model_time(t), cond=ctx.cond)
        outs = {gm: ClassifierFreeGuidance(gm)(m, st, t, ctx) for gm in (0.0, 1.0, 3.0)}
    for k in ("lattice", "frac"):
        assert torch.equal(outs[0.0][k], u[k]) and torch.equal(outs[1.0][k], c[k])
        torch.testing.assert_close(outs[3.0][k], 3 * c[k] - 2 * u[k], rtol=1e-5, atol=1e-6)
    if fam == "mattergen":   # the guided distribution is p_c^γ p_u^(1−γ) / Z
        pc, pu = torch.softmax(c["types"].double(), -1), torch.softmax(u["types"].double(), -1)
        q = pc ** 3 * pu ** -2
        torch.testing.assert_close(outs[3.0]["types"].double().exp(), q / q.sum(-1, keepdim=True), rtol=1e-4, atol=1e-7)


def test_cfg_logit_mix_is_geometric_mean_for_gamma_half():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 7, generator=g, dtype=torch.float64), torch.randn(4, 7, generator=g, dtype=torch.float64)
    q = torch.sqrt(torch.softmax(a, -1) * torch.softmax(b, -1))
    torch.testing.assert_close(cfg_mix_logits(a, b, 0.5).exp(), q / q.sum(-1, keepdim=True))


def test_cfg_gamma_one_chain_equals_conditional_chain():
    d = CrystalDiffusion("diffcsp", T=15, n_mc=200)
    torch.manual_seed(0)
    m = Denoiser(**SMALL, cond_specs=SPECS).eval()
    cond = {"band_gap": torch.tensor([1.0, 2.0])}
    a = sample(m, d, num_atoms=[2, 3], cond=cond, hooks=SamplerHooks(predict=ClassifierFreeGuidance(1.0)), seed=4, progress=False)
    b = sample(m, d, num_atoms=[2, 3], cond=cond, seed=4, progress=False)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.lattice, y.lattice, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(x.frac_coords, y.frac_coords, atol=1e-4)


def test_check_conditions_errors_and_range_warning():
    m = Denoiser(**SMALL, cond_specs=SPECS)
    with pytest.raises(ValueError, match="unknown property 'gap'.*band_gap"):
        check_conditions({"gap": 1.0}, m, n=2)
    with pytest.raises(ValueError, match="not trained on condition 'e_above_hull'"):
        check_conditions({"e_above_hull": 0.0}, m, n=2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = check_conditions({"band_gap": [1.0, 7.5]}, m, n=2)
    assert len(w) == 1 and "[0, 6]" in str(w[0].message)
    assert out["band_gap"].tolist() == [1.0, 7.5]


# ---------------------------------------------------------------- score units
@pytest.mark.parametrize("fam", list(FAMILIES))
def test_add_score_matches_autograd_of_gaussian_log_likelihood(fam):
    "δ = s ∇ log N(y; f(x), σ²) with f = sum of squared lattice entries + sum of frac: the shifted scores differ by exactly δ."
    d = CrystalDiffusion(fam, T=40, n_mc=200)
    torch.manual_seed(1)
    net = Denoiser(**SMALL, **FAMILIES[fam]).eval()
    g = torch.Generator().manual_seed(2)
    na = torch.tensor([2, 4])
    st, bidx = d.prior(na, generator=g)
    ctx = SampleContext(d, na, bidx, g)
    t = torch.tensor([5, 30])

    class F(torch.nn.Module):
        def forward(self, types, frac, lattice, num_atoms, batch, tt):
            return (lattice ** 2).sum((1, 2)) + torch.zeros(2).index_add_(0, batch, frac.sum(1))

    with torch.no_grad():
        o = net(st["types"], st["frac"], st["lattice"], na, bidx, d.model_time(t))
    cg = ClassifierGuidance(F(), target=3.0, scale=0.7, sigma_y=1.5, fields=("lattice", "frac"))
    o2 = cg(o, st, t, ctx)
    L = st["lattice"].clone().requires_grad_(True)
    X = st["frac"].clone().requires_grad_(True)
    f = F()(None, X, L, na, bidx, None)
    gL, gX = torch.autograd.grad((-(f - 3.0) ** 2 / (2 * 1.5 ** 2)).sum(), [L, X])
    if fam == "mattergen": gL = 0.5 * (gL + gL.mT)
    s1, s2 = field_scores(o, st, t, ctx), field_scores(o2, st, t, ctx)
    torch.testing.assert_close(s2["lattice"] - s1["lattice"], 0.7 * gL, rtol=1e-3, atol=1e-3 * float(gL.abs().max()))
    torch.testing.assert_close(s2["frac"] - s1["frac"], 0.7 * gX, rtol=1e-3, atol=1e-3 * float(gX.abs().max()))


# ---------------------------------------------------------------- hard constraints on the shipped model
@pytest.mark.parametrize("seed", [0, 1])
def test_chemical_system_never_violated(shipped, seed):
    net, d = shipped
    out = sample(net, d, num_atoms=[3, 5, 8, 12], steps=8, hooks=chemical_system("Mg-Si-O"), seed=seed, progress=False)
    assert out and all(set(c.atomic_numbers.tolist()) <= {12, 14, 8} for c in out)


def test_partial_composition_exact_counts_across_chunks(shipped):
    net, d = shipped
    out = sample(net, d, num_atoms=[5, 7, 9, 11, 6], steps=8, batch_size=2, hooks=partial_composition({"N": 2, "Ga": 1}),
                 seed=5, progress=False)
    assert len(out) == 5
    for c in out:
        assert (c.atomic_numbers == 7).sum() == 2 and (c.atomic_numbers == 31).sum() == 1


def test_fix_atoms_and_sites_combined(shipped):
    net, d = shipped
    tmpl = rocksalt(5.64)
    mask = np.array([False, True, False, False, True, True, False, False])
    h = combine_hooks(FixAtoms(tmpl, mask).hooks(), FixSites({0: "K"}).hooks())
    out = sample(net, d, template=[tmpl] * 3, t0=15, hooks=h, seed=2, progress=False)
    for c in out:
        assert c.atomic_numbers[0] == 19
        assert (c.atomic_numbers[mask] == tmpl.atomic_numbers[mask]).all()
        np.testing.assert_allclose(c.frac_coords[mask], tmpl.frac_coords[mask], atol=1e-6)
    with pytest.raises(ValueError, match="one entry per template atom"):
        FixAtoms(tmpl, [True, False])


# ---------------------------------------------------------------- constraint penalties
def test_min_image_distances_match_pymatgen():
    cs = random_crystals(4, seed=7)
    b = CrystalBatch.from_crystals(cs, dtype=torch.float64)
    src, dst, eb, dist = min_image_distances(b.lattice, b.frac_coords, b.num_atoms)
    ptr = np.cumsum([0] + [c.num_atoms for c in cs])
    for k, c in enumerate(cs):
        dm = c.to_structure().distance_matrix
        sel = (eb == k) & (src != dst)
        i, j = src[sel].numpy() - ptr[k], dst[sel].numpy() - ptr[k]
        np.testing.assert_allclose(dist[sel].numpy(), dm[i, j], atol=1e-8)


def test_penalty_scalars_match_independent_routes():
    c = random_crystals(1, seed=3)[0]
    s = c.to_structure()
    b = CrystalBatch.from_crystals([c], dtype=torch.float64)
    P = torch.nn.functional.one_hot(b.atomic_numbers - 1, NUM_TYPES).double()
    lat = s.lattice
    torch.testing.assert_close(lattice_angles(b.lattice)[0], torch.tensor([lat.alpha, lat.beta, lat.gamma], dtype=torch.float64))
    rho = float(s.density)
    assert Density(rho - 0.01, rho + 0.01).penalty(b.lattice, b.frac_coords, P, b.num_atoms, b.batch).item() == 0
    assert Density(min=rho + 0.1).penalty(b.lattice, b.frac_coords, P, b.num_atoms, b.batch).item() == pytest.approx(1.0, rel=1e-6)
    v = s.volume / len(s)
    assert VolumePerAtom(max=v - 0.5).penalty(b.lattice, b.frac_coords, P, b.num_atoms, b.batch).item() == pytest.approx(0.25, rel=1e-6)


def test_coordination_number_counts_neighbours_like_pymatgen():
    c = rocksalt(5.64)
    b = CrystalBatch.from_crystals([c], dtype=torch.float64)
    P = torch.nn.functional.one_hot(b.atomic_numbers - 1, NUM_TYPES).double()
    n_pmg = len(c.to_structure().get_neighbors(c.to_structure()[0], 3.3))    # 6 Cl around Na
    assert n_pmg == 6
    for target, zero in ((6, True), (4, False), (12, False)):
        p = CoordinationNumber("Na", target, 3.3).penalty(b.lattice, b.frac_coords, P, b.num_atoms, b.batch).item()
        assert (p == 0) == zero
    # second shell: 12 Na around Na at 3.99 Å, counted with a 4.3 Å cutoff
    assert CoordinationNumber("Na", 18, 4.3).penalty(b.lattice, b.frac_coords, P, b.num_atoms, b.batch).item() == 0


def test_penalties_invariant_under_rotation_and_translation():
    cs = random_crystals(3, seed=11)
    cons = [LatticeLengths(4, 5), LatticeAngles(85, 95), VolumePerAtom(10, 14), Density(2, 4), PairDistance("O", "Ti", 1.9, 2.2),
            PairDistance("Na", "Na", min=3.0), CoordinationNumber("Sr", 8, 3.2), Elements(deny=["Cl"])]
    b = CrystalBatch.from_crystals(cs, dtype=torch.float64)
    P = torch.softmax(torch.randn(b.frac_coords.shape[0], NUM_TYPES, generator=torch.Generator().manual_seed(0),
                                  dtype=torch.float64) * 3, -1)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    shift = torch.tensor([0.31, -0.17, 0.77], dtype=torch.float64)
    for c in cons:
        p1 = c.penalty(b.lattice, b.frac_coords, P, b.num_atoms, b.batch)
        p2 = c.penalty(b.lattice @ Q, torch.remainder(b.frac_coords + shift, 1.0), P, b.num_atoms, b.batch)
        torch.testing.assert_close(p1, p2, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("make", [lambda: ConstraintSet([LatticeLengths(2, 3), LatticeLengths(min=3.5)]),
                                  lambda: ConstraintSet([Elements(allow=["O"]), PairDistance("Ti", "O", 1.8, 2.0)]),
                                  lambda: ConstraintSet([Elements(deny=[z for z in range(1, 101) if z != 8]), Elements(deny=["O"])]),
                                  lambda: LatticeAngles(100, 90), lambda: PairDistance("O", "O", min=-1.0)])
def test_contradictions_raise(make):
    with pytest.raises(ValueError):
        make()


def test_projection_reaches_every_window():
    fam = perovskite_ABX3()
    cg = ConstraintGuidance(fam.constraints, project=True, project_steps=800)
    rng = np.random.default_rng(0)
    cs = [Crystal([38, 22, 8, 8, 8], rng.random((5, 3)), np.diag(rng.uniform(3.3, 4.6, 3)) + rng.uniform(-0.3, 0.3, (3, 3)))
          for _ in range(4)]
    assert not fam.constraints.evaluate(cs)["satisfied"].any()
    assert fam.constraints.evaluate(cg.project_crystals(cs))["satisfied"].all()


def test_constraint_guidance_only_touches_violating_crystals(shipped):
    net, d = shipped
    good = Crystal([38, 22, 8, 8, 8], [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]], np.eye(3) * 3.95)
    kb = CrystalBatch.from_crystals([good, good])
    t = torch.tensor([2, 2])
    st, _ = d.q_sample(kb, t, generator=torch.Generator().manual_seed(0))
    st["lattice"][1] *= 1.5
    ctx = SampleContext(d, kb.num_atoms, kb.batch, torch.Generator())
    with torch.no_grad():
        o = net(st["types"], st["frac"], st["lattice"], kb.num_atoms, kb.batch, d.model_time(t))
    cg = ConstraintGuidance([LatticeLengths(3.4, 4.6)], scale=1.0, schedule="constant")
    og = cg(o, st, t, ctx)
    assert torch.equal(og["lattice"][0], o["lattice"][0]) and torch.equal(og["frac"][:5], o["frac"][:5])
    s0, s1 = field_scores(o, st, t, ctx)["lattice"][1], field_scores(og, st, t, ctx)["lattice"][1]
    # the shift has the score's norm and lengthens nothing: it shortens the stretched vectors
    assert float((s1 - s0).norm()) == pytest.approx(float(s0.norm()), rel=1e-3)
    assert float(((s1 - s0) * st["lattice"][1]).sum()) < 0


def test_constraint_guidance_tilts_d3pm_logits_away_from_forbidden_elements():
    d = CrystalDiffusion("mattergen", T=30, n_mc=200)
    torch.manual_seed(0)
    net = Denoiser(**SMALL, **FAMILIES["mattergen"]).eval()
    na = torch.tensor([3, 2])
    st, bidx = d.prior(na, generator=torch.Generator().manual_seed(1))
    ctx = SampleContext(d, na, bidx, torch.Generator())
    t = torch.tensor([10, 10])
    with torch.no_grad():
        o = net(st["types"], st["frac"], st["lattice"], na, bidx, d.model_time(t))
    cg = ConstraintGuidance([Elements(allow=["Li", "O"])], scale=1.0, schedule="constant", fields=("types",))
    og = cg(o, st, t, ctx)
    tilt = og["types"] - o["types"]
    allowed = torch.zeros(NUM_TYPES, dtype=torch.bool)
    allowed[[2, 7]] = True
    # ∂P/∂p = 1 on forbidden elements, 0 on allowed ones: a uniform negative tilt on the forbidden logits only
    assert torch.all(tilt[:, allowed] == 0) and torch.all(tilt[:, ~allowed] < 0)
    p0, p1 = torch.softmax(o["types"], -1), torch.softmax(og["types"], -1)
    assert torch.all(p1[:, allowed].sum(-1) > p0[:, allowed].sum(-1))


# ---------------------------------------------------------------- bad input: conditions and contradictory constraints
def test_check_conditions_parses_symbols_and_refuses_bad_values():
    specs = [{"name": "space_group", "kind": "categorical", "num_classes": 231},
             {"name": "chemical_system", "kind": "multihot", "num_classes": 100}, SPECS[0]]
    m = Denoiser(**SMALL, cond_specs=specs)
    out = check_conditions({"space_group": "P6_3/mmc", "chemical_system": ["O", "Li"]}, m, n=3)
    assert out["space_group"].tolist() == [194] * 3
    assert out["chemical_system"].shape == (3, 100) and out["chemical_system"][1].nonzero()[:, 0].tolist() == [2, 7]
    for bad, msg in (({"space_group": "Fm3mm"}, "unknown space-group symbol"), ({"space_group": 231}, "1..230"),
                     ({"space_group": 0}, "1..230"), ({"band_gap": "3 eV"}, "needs numbers"),
                     ({"band_gap": float("-inf")}, "infinite"), ({"chemical_system": "Li-Qq"}, "unknown element")):
        with pytest.raises(ValueError, match=msg):
            check_conditions(bad, m, n=1)
    # NaN is the null value (unconditional for that crystal) and passes
    assert torch.isnan(check_conditions({"band_gap": [1.0, float("nan")]}, m, n=2)["band_gap"][1])


@pytest.mark.parametrize("parts, msg", [
    (lambda: (partial_composition({"O": 2, "Li": 1}), chemical_system("Mn-O")), r"puts \{Li\} on site 2"),
    (lambda: (chemical_system("Li-O"), chemical_system("Na-Cl")), "no element is allowed by all"),
    (lambda: (FixSites({1: "Sr"}).hooks(), FixSites({1: "Ca"}).hooks()), r"site 1 is fixed to \{Ca\}"),
    (lambda: (partial_composition({"N": 1, "Ga": 1}), chemical_system("Ga-N")), "free sites would have no allowed element"),
    (lambda: (FixSites({0: "Ti"}).hooks(), ConstraintGuidance([Elements(deny=["Ti"])]).hooks()), r"puts \{Ti\} on site 0"),
    (lambda: (chemical_system("Fe-O"), ConstraintGuidance([Elements(allow=["Li", "N"])]).hooks()), "no element is allowed by all"),
])
def test_contradictory_hard_constraints_refused_when_combined(parts, msg):
    with pytest.raises(ValueError, match=msg):
        combine_hooks(*parts())


def test_compatible_hard_constraints_accepted_and_obeyed(shipped):
    net, d = shipped
    h = combine_hooks(partial_composition({"O": 2, "Fe": 1}), chemical_system("Li-Fe-P-O"))
    out = sample(net, d, num_atoms=[4, 6], steps=4, hooks=h, seed=0, progress=False)
    for c in out:
        assert (c.atomic_numbers == 8).sum() == 2 and (c.atomic_numbers == 26).sum() == 1
        assert set(c.atomic_numbers.tolist()) <= {3, 26, 15, 8}


def test_elements_allow_deny_overlap_is_an_error():
    with pytest.raises(ValueError, match="both allowed and denied"):
        Elements(allow=["Li", "O", "Fe"], deny=["Fe"])


def test_volume_factor_range_brackets_random_cells():
    "Every random cell with angles in the window has V/(abc) inside the computed bounds (independent route: pymatgen volume)."
    from xtalnb.constraint_guidance import volume_factor_range
    from pymatgen.core import Lattice
    rng = np.random.default_rng(0)
    for lo, hi in ((80, 100), (60, 75), (95, 130)):
        flo, fhi = volume_factor_range(lo, hi)
        for _ in range(200):
            al, be, ga = rng.uniform(lo, hi, 3)
            try: lat = Lattice.from_parameters(3.0, 4.0, 5.0, al, be, ga)
            except Exception: continue
            if not np.isfinite(lat.volume) or lat.volume <= 1e-9: continue
            f = lat.volume / 60.0
            assert flo - 1e-9 <= f <= fhi + 1e-9, (lo, hi, al, be, ga, f, flo, fhi)


@pytest.mark.parametrize("make, msg", [
    (lambda: ConstraintSet([LatticeLengths(3.0, 3.5), LatticeAngles(85, 95), VolumePerAtom(min=25)]).check_feasible(num_atoms=2),
     "LatticeLengths\\+LatticeAngles \\(2 atoms\\)"),
    (lambda: ConstraintSet([Density(max=1.0), VolumePerAtom(max=10), Elements(allow=["Fe", "Pt"])]), "Density"),
    (lambda: ConstraintSet([CoordinationNumber("Mg", 4, 2.2, neighbor="O"), PairDistance("Mg", "O", min=2.7)]), "needs neighbours"),
    (lambda: ConstraintSet([LatticeAngles(130, 170)]), "no cell has all three angles"),
])
def test_cross_quantity_contradictions(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_feasible_cross_quantity_sets_pass_on_a_real_crystal():
    "A constraint set that a real crystal satisfies must never be called contradictory."
    c = rocksalt(5.64)
    cs = ConstraintSet([LatticeLengths(5.5, 5.8), LatticeAngles(89, 91), VolumePerAtom(22, 23.5), Density(2.0, 2.3),
                        PairDistance("Na", "Cl", 2.7, 2.9), CoordinationNumber("Na", 6, 3.3, neighbor="Cl"), Elements(allow=["Na", "Cl"])])
    cs.check_feasible(num_atoms=8)
    cs.check_feasible(composition=c.atomic_numbers.tolist())
    assert cs.evaluate([c])["satisfied"].all()


def test_constraint_guidance_checks_atom_count_before_guiding(shipped):
    net, d = shipped
    cg = ConstraintGuidance([LatticeLengths(3.85, 4.05), LatticeAngles(88, 92), VolumePerAtom(min=20)])
    with pytest.raises(ValueError, match="5 atoms"):
        sample(net, d, num_atoms=[5], steps=2, hooks=cg.hooks(), seed=0, progress=False)
    assert cg.history == []          # refused before any guided update


def test_combine_hooks_keeps_every_slot():
    "predict, record and trace survive the merge (trace was once dropped), lists keep their order, two setters are refused."
    f_pred, f_rec, f_tr, m1, m2, p1 = (lambda *a: None), (lambda *a: None), (lambda *a: None), (lambda *a: 1), (lambda *a: 2), (lambda *a: 3)
    h = combine_hooks(SamplerHooks(predict=f_pred, modifiers=[m1]), SamplerHooks(trace=f_tr, modifiers=[m2], project=[p1]),
                      SamplerHooks(record=f_rec))
    assert (h.predict, h.record, h.trace) == (f_pred, f_rec, f_tr)
    assert h.modifiers == [m1, m2] and h.project == [p1]
    with pytest.raises(ValueError, match="may set `trace`"):
        combine_hooks(SamplerHooks(trace=f_tr), SamplerHooks(trace=f_rec))
