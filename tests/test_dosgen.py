"Tests of xtalnb.dosgen: hand-built DOS targets, DOS surrogate, DOS-conditioned denoiser, CFG, classifier-guidance wrapper, sampling tasks."
import dataclasses
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from xtalnb.crystal import Crystal, CrystalBatch
from xtalnb.denoiser import Denoiser
from xtalnb.diffusion import CrystalDiffusion
from xtalnb.dos import dos_grid
from xtalnb.dosgen import (AU3NI_L12_A, IRO2_RUTILE, DOSMatch, DOSSurrogate, _onehot, atom_condition, dos_conditional_model,
                           dos_generate, dos_mae, evaluate_candidates, l12_crystal, load_target, rutile_crystal, train_dos_conditional,
                           train_dos_surrogate, export_surrogate)
from xtalnb.guidance import ClassifierFreeGuidance
from xtalnb.classifier import ClassifierGuidance
from xtalnb.sampling import SampleContext
from xtalnb.checkpoint import load_model

TINY = dict(hidden=16, layers=2, num_freqs=2, time_dim=8)
AU, IR = l12_crystal(), rutile_crystal()


@pytest.fixture(scope="module")
def batch():
    return CrystalBatch.from_crystals([AU, IR])


@pytest.fixture(scope="module")
def cond_model():
    torch.manual_seed(0)
    base = Denoiser(**TINY)
    cm, _ = dos_conditional_model(base, "full")
    return base, cm


def test_targets_match_closed_forms():
    s = IR.to_structure()
    assert s.get_space_group_info()[1] == 136 and AU.to_structure().get_space_group_info()[1] == 221
    a, c, x = IRO2_RUTILE["a"], IRO2_RUTILE["c"], IRO2_RUTILE["x"]
    d = sorted(n.nn_distance for n in s.get_neighbors(s[0], 2.3))
    np.testing.assert_allclose(d[:2], np.sqrt(2) * x * a, atol=1e-9)
    np.testing.assert_allclose(d[2:], np.sqrt(2 * ((0.5 - x) * a) ** 2 + c ** 2 / 4), atol=1e-9)
    sa = AU.to_structure()
    d_ni = [n.nn_distance for n in sa.get_neighbors(sa[0], 3.0)]
    assert len(d_ni) == 12 and np.allclose(d_ni, AU3NI_L12_A / np.sqrt(2))
    with pytest.raises(ValueError, match="0 < x < 0.5"):
        rutile_crystal(x=0.6)


def test_committed_targets():
    for name, z, n in [("Au3Ni_L12_Ni", 28, 4), ("IrO2_rutile_Ir", 77, 6)]:
        y, g, c, meta = load_target(name)
        assert y.shape == (400,) and g.shape == (n, 400) and int(c.atomic_numbers[meta["site"]]) == z
        np.testing.assert_array_equal(y, g[meta["site"]])
        assert meta["max_abs_charge"] < 3 and meta["min_length"] == 7.0
        # the window holds part of each atom's 2·n_orb states (GFN1: 9 orbitals for Ni, Au, Ir; 4 for O); never more
        n_orb = np.array([4 if zz == 8 else 9 for zz in c.atomic_numbers])
        integral = np.trapezoid(g, dos_grid(), axis=1)
        assert (integral > 0.5).all() and (integral < 2 * n_orb + 1e-3).all()
    with pytest.raises(ValueError, match="no DOS target"):
        load_target("nope")


def test_surrogate_shapes_and_invariances(batch):
    torch.manual_seed(0)
    sur = DOSSurrogate(**TINY, y_scale=2.0)
    y = sur(_onehot(batch), batch.frac_coords, batch.lattice, batch.num_atoms, batch.batch)
    assert y.shape == (10, 400)
    y_ir = sur.predict([IR])[0]
    np.testing.assert_allclose(y[4:].detach().numpy(), y_ir, atol=1e-5)                      # batch independence
    perm = np.array([2, 5, 0, 1, 4, 3])
    np.testing.assert_allclose(sur.predict([Crystal(IR.atomic_numbers[perm], IR.frac_coords[perm], IR.lattice)])[0], y_ir[perm], atol=1e-5)
    shifted = Crystal(IR.atomic_numbers, (IR.frac_coords + [0.3, 0.1, 0.9]) % 1, IR.lattice)
    np.testing.assert_allclose(sur.predict([shifted])[0], y_ir, atol=1e-5)
    with pytest.raises(ValueError, match="one-hot"):
        sur(batch.atomic_numbers, batch.frac_coords, batch.lattice, batch.num_atoms, batch.batch)


def test_surrogate_training_resumes_exactly_and_fits(tmp_path):
    lab = [dataclasses.replace(AU, atom_props={"dos": np.tile(np.exp(-dos_grid() ** 2), (4, 1)).astype(np.float32)}, id="a"),
           dataclasses.replace(IR, atom_props={"dos": np.tile(np.exp(-(dos_grid() - 2) ** 2), (6, 1)).astype(np.float32)}, id="b")]
    torch.manual_seed(0); m1 = DOSSurrogate(**TINY)
    before = dos_mae(m1, lab)["mae"]
    train_dos_surrogate(m1, lab, tmp_path / "a", steps=30, batch_size=2, lr=3e-3, progress=False)
    torch.manual_seed(0); m2 = DOSSurrogate(**TINY)
    for _ in range(2):
        train_dos_surrogate(m2, lab, tmp_path / "b", steps=30, batch_size=2, lr=3e-3, progress=False, time_budget_s=0.0 if _ == 0 else None)
    for k, v in m1.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], v)
    assert dos_mae(m1, lab)["mae"] < 0.5 * before
    export_surrogate(tmp_path / "sur", tmp_path / "a")
    m3, _, card = load_model(tmp_path / "sur.pt")
    assert card["task"] == "dos_surrogate" and m3.predict([IR])[0].shape == (6, 400)


def test_conditional_model_starts_as_base_and_condition_acts(batch, cond_model):
    base, cm0 = cond_model
    cm = Denoiser.from_config(cm0.config); cm.load_state_dict(cm0.state_dict())
    types, t = _onehot(batch), torch.full((2,), 0.4)
    ac = torch.rand(10, 400)
    run = lambda m, **kw: m(types, batch.frac_coords, batch.lattice, batch.num_atoms, batch.batch, t, **kw)
    ob, oc = run(base), run(cm, atom_cond=ac)
    for k in ob:
        torch.testing.assert_close(oc[k], ob[k])                         # zero-initialised P and null embedding
    with torch.no_grad():
        cm.atom_cond_proj.weight.normal_(0, 0.1); cm.atom_cond_null.normal_(0, 0.5)
    o1, o0 = run(cm, atom_cond=ac), run(cm)
    assert (o1["frac"] - o0["frac"]).abs().max() > 1e-3
    for k in o0:
        torch.testing.assert_close(run(cm, atom_cond=torch.full((10, 400), float("nan")))[k], o0[k])
        torch.testing.assert_close(run(cm, atom_cond=ac, drop={"atom_cond": torch.ones(10, dtype=torch.bool)})[k], o0[k])
    # masked: condition only atom 0 of crystal 0 -> crystal 1 is exactly unconditioned
    om = run(cm, atom_cond=torch.cat([atom_condition(ac[0].numpy(), [4], (0,)), torch.full((6, 400), float("nan"))]))
    torch.testing.assert_close(om["frac"][4:], o0["frac"][4:]); torch.testing.assert_close(om["lattice"][1], o0["lattice"][1])
    # CFG through the sampler's predict hook: γ = 1 conditional, 0 unconditional, 2 (ω = 1) = 2c − u
    diff = CrystalDiffusion("diffcsp", T=50)
    state = {"types": types, "frac": batch.frac_coords, "lattice": batch.lattice}
    ctx = SampleContext(diff, batch.num_atoms, batch.batch, torch.Generator(), atom_cond=ac)
    ti = torch.tensor([20, 20])
    with torch.no_grad():
        c = cm(types, batch.frac_coords, batch.lattice, batch.num_atoms, batch.batch, diff.model_time(ti), atom_cond=ac)
        u = cm(types, batch.frac_coords, batch.lattice, batch.num_atoms, batch.batch, diff.model_time(ti))
        for g, ref in [(1.0, c), (0.0, u), (2.0, {k: 2 * c[k] - u[k] for k in c})]:
            mixed = ClassifierFreeGuidance(g)(cm, state, ti, ctx)
            for k in ref:
                torch.testing.assert_close(mixed[k], ref[k], atol=1e-5, rtol=1e-5)


def test_projection_mode_trains_only_the_projection(cond_model):
    base, _ = cond_model
    pm, own = dos_conditional_model(base, "projection")
    assert sum(p.numel() for p in own) == 400 * 16 + 16 + 16
    assert all(not p.requires_grad for n, p in pm.named_parameters() if not n.startswith("atom_cond"))
    with pytest.raises(ValueError, match="mode must be"):
        dos_conditional_model(base, "adapter")


def test_classifier_guidance_gradient(batch):
    torch.manual_seed(1)
    sur = DOSSurrogate(**TINY).eval()
    diff = CrystalDiffusion("diffcsp", T=50)
    types, ti = _onehot(batch), torch.tensor([20, 20])
    with torch.no_grad():
        pred = sur(types, batch.frac_coords, batch.lattice, batch.num_atoms, batch.batch, diff.model_time(ti))
    tgt = torch.full((10, 400), float("nan")); tgt[0] = pred[0]; tgt[4] = pred[4] + 1.0
    match = DOSMatch(sur, tgt)
    f = match(types, batch.frac_coords, batch.lattice, batch.num_atoms, batch.batch, diff.model_time(ti))
    np.testing.assert_allclose(f.detach().numpy(), [0.0, 1.0], atol=1e-4)
    cg = ClassifierGuidance(match, target=0.0, sigma_y=0.5, fields=("lattice",))
    ctx = SampleContext(diff, batch.num_atoms, batch.batch, torch.Generator())
    g = cg.grad_log_likelihood({"types": types, "frac": batch.frac_coords, "lattice": batch.lattice}, ti, ctx)["lattice"]
    logp = lambda L: float(-(match(types, batch.frac_coords, L, batch.num_atoms, batch.batch, diff.model_time(ti)) ** 2).sum() / 0.5)
    dL = torch.zeros_like(batch.lattice); dL[1, 2, 1] = 1e-3
    fd = (logp(batch.lattice + dL) - logp(batch.lattice - dL)) / 2e-3
    assert fd == pytest.approx(float(g[1, 2, 1]), rel=2e-3, abs=2e-3)


def test_constrained_generation_tasks(cond_model):
    _, cm = cond_model
    diff = CrystalDiffusion("diffcsp", T=50)
    y = np.exp(-dos_grid() ** 2).astype(np.float32)
    m = (cm, diff, {"name": "tiny", "task": "denovo"})
    fixed = dos_generate(m, y, [4, 5, 7], fix_sites={0: "Pd"}, steps=5, seed=3)
    assert len(fixed) + len(fixed.failed) == 3 and {int(c.atomic_numbers[0]) for c in fixed} == {46}
    tmpl = dos_generate(m, y, 2, template=IR, t0=10, conditioned=(0, 1), steps=5)
    assert all(c.num_atoms == 6 for c in tmpl)
    sur = DOSSurrogate(**TINY)
    ev = evaluate_candidates(fixed, y, sur, xtb=False)
    np.testing.assert_allclose(ev.mae_surrogate_vs_target, [np.abs(p[0] - y).mean() for p in sur.predict(fixed)], rtol=1e-6)
    with pytest.raises(ValueError, match="expects 400"):
        dos_generate(m, y[:50], [4])
    with pytest.raises(ValueError, match="only 2 atoms"):
        atom_condition(y, [4, 2], (3,))


def test_shipped_surrogate_loads():
    m, _, card = load_model("dos-surrogate")
    y = m.predict([AU, IR])
    assert [a.shape for a in y] == [(4, 400), (6, 400)] and np.isfinite(np.concatenate(y)).all()
    assert card["test_mae"] > 0


def test_train_dos_conditional_runs_the_one_loop_and_resumes(tmp_path):
    """train_dos_conditional goes through xtalnb.train.train (per-atom condition 'dos'): stopped and resumed == uninterrupted;
    the exported model takes DOS in states/eV (scale folded into P); a run directory of the earlier DOS-only loop (state.pt with
    `scale`, no per-atom fields in its TrainConfig) resumes with its stored scale."""
    from xtalnb.train import TrainConfig
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = (Denoiser(**TINY), CrystalDiffusion("diffcsp", n_mc=1000), {"name": "tiny-base", "task": "denovo"})
    rng = np.random.default_rng(0)
    lab = [dataclasses.replace(c, id=f"{c.id}-{i}", atom_props={"dos": rng.random((c.num_atoms, 400)).astype(np.float32) * (1 + i)})
           for i, c in enumerate([AU, IR, AU, IR])]
    kw = dict(steps=8, batch_size=2, ckpt_every=2, progress=False, out_dir=tmp_path, lr=1e-2)
    a = train_dos_conditional("a", lab, base=base, run_dir=tmp_path / "ra", **kw)
    b = train_dos_conditional("b", lab, base=base, run_dir=tmp_path / "rb", until_step=3, **kw)
    assert b["step"] == 3 and not b["done"] and not (tmp_path / "b.pt").exists()     # unfinished: nothing exported by default
    b = train_dos_conditional("b", lab, base=base, run_dir=tmp_path / "rb", data_desc="toy labels", **kw)
    assert load_model(tmp_path / "b.pt")[2]["data"] == "4 crystals with GFN1-xTB per-atom DOS (toy labels)"
    with pytest.raises(ValueError, match="export must be"):
        train_dos_conditional("b", lab, base=base, run_dir=tmp_path / "rb", export="yes", **kw)
    sa, sb = (torch.load(tmp_path / r / "state.pt", weights_only=False) for r in ("ra", "rb"))
    assert sa["step"] == sb["step"] == 8 and {"task", "model_config", "torch_rng"} <= set(sa)        # written by train.train
    assert sa["train_config"]["atom_cond_key"] == "dos" and sa["train_config"]["p_atom_uncond"] == 0.2
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    scale = float(np.concatenate([c.atom_props["dos"].ravel() for c in lab]).std())
    assert a["scale"] == pytest.approx(scale) and sa["train_config"]["atom_cond_scale"] == pytest.approx(scale)
    # the exported model with DOS in states/eV == the trained EMA network with DOS / scale
    m, diff, card = load_model(tmp_path / "a.pt")
    raw = Denoiser.from_config(m.config); raw.load_state_dict(sa["ema"]["shadow"]); raw.eval()
    bt = CrystalBatch.from_crystals(lab[:2]); y = bt.atom_props["dos"]; t = torch.full((2,), 0.3)
    args = (_onehot(bt), bt.frac_coords, bt.lattice, bt.num_atoms, bt.batch, t)
    with torch.no_grad():
        o_exp, o_raw = m(*args, atom_cond=y), raw(*args, atom_cond=y / scale)
    for k in o_raw:
        torch.testing.assert_close(o_exp[k], o_raw[k], rtol=1e-4, atol=1e-5)
    assert (m.atom_cond_proj.weight.abs().sum() > 0) and card["atom_cond_scale_folded"] == pytest.approx(scale)
    # an old-format run directory (the earlier DOS-only loop): its own `scale` is used when resuming
    c = train_dos_conditional("c", lab, base=base, run_dir=tmp_path / "rc", until_step=4, export=False, **kw)
    st = torch.load(tmp_path / "rc" / "state.pt", weights_only=False)
    old_cfg = {k: v for k, v in st["train_config"].items() if k not in ("atom_cond_key", "atom_cond_scale", "p_atom_uncond")}
    old = {"step": st["step"], "elapsed_s": st["elapsed_s"], "model": st["model"], "optimizer": st["optimizer"], "ema": st["ema"],
           "scale": 2 * scale, "train_config": old_cfg, "mode": "full"}
    torch.save(old, tmp_path / "rc" / "state.pt")
    with pytest.warns(UserWarning, match="different TrainConfig"):
        c = train_dos_conditional("c", lab, base=base, run_dir=tmp_path / "rc", **kw)
    assert c["step"] == 8 and c["scale"] == pytest.approx(2 * scale) and c["card"]["atom_cond_scale_folded"] == pytest.approx(2 * scale)
    assert TrainConfig(**c["card"]["train_config"]).atom_cond_scale == pytest.approx(2 * scale)
