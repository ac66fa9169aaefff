"Tests for xtalnb.denoiser: symmetries, conditioning nulls, adapters, capacity."
import json

import pytest
import torch
import torch.nn.functional as F

from xtalnb.denoiser import (MASK_TOKEN, NUM_TYPES, Denoiser, all_pairs_edges, check_batch, fourier_features,
                             lattice_features)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: one thread avoids oversubscription


def rand_batch(ns, seed=0, dtype=F64, tokens=False):
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(ns)
    N, B = int(n.sum()), len(ns)
    z = torch.randint(0, NUM_TYPES + (1 if tokens else 0), (N,), generator=g)
    types = z if tokens else F.one_hot(z, NUM_TYPES).to(dtype)
    x = torch.rand(N, 3, generator=g, dtype=dtype)
    L = 4 * torch.eye(3, dtype=dtype) + torch.randn(B, 3, 3, generator=g, dtype=dtype)
    return types, x, L, n, torch.repeat_interleave(torch.arange(B), n), torch.rand(B, generator=g, dtype=dtype)


def orthogonal(seed, reflect):
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    if (torch.det(Q) < 0) != reflect:
        Q = Q * torch.tensor([-1.0, 1, 1], dtype=F64)
    return Q


def maxdiff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def small(**kw):
    torch.manual_seed(0)
    return Denoiser(hidden=32, layers=3, num_freqs=4, time_dim=16, **kw).double()


def test_edges_match_brute_force():
    n = torch.tensor([2, 5, 1, 3])
    src, dst, eb = all_pairs_edges(n)
    ptr = [0, 2, 7, 8]
    brute = [(ptr[b] + i, ptr[b] + j, b) for b in range(4) for i in range(n[b]) for j in range(n[b])]
    assert list(zip(src.tolist(), dst.tolist(), eb.tolist())) == brute
    with pytest.raises(ValueError, match="contiguous"):
        check_batch(torch.tensor([1, 1]), torch.tensor([1, 0]))


def test_features_invariances():
    d = torch.rand(7, 3, dtype=F64) - 0.5
    k = torch.randint(-4, 5, (7, 3)).to(F64)
    assert torch.allclose(fourier_features(d + k, 6), fourier_features(d, 6), atol=1e-10)
    L = 4 * torch.eye(3, dtype=F64) + torch.randn(3, 3, 3, dtype=F64)
    for reflect in (False, True):
        assert torch.allclose(lattice_features(L @ orthogonal(3, reflect).T), lattice_features(L), atol=1e-12)


@pytest.mark.parametrize("family", [dict(), dict(lattice_output="symmetric", type_input="tokens", type_output="logits")])
def test_symmetries(family):
    model = small(**family)
    tokens = family.get("type_input") == "tokens"
    types, x, L, n, batch, t = rand_batch([4, 7, 1, 5], seed=1, tokens=tokens)
    ref = model(types, x, L, n, batch, t)
    g = torch.Generator().manual_seed(2)
    ptr = torch.cumsum(n, 0) - n
    perm = torch.cat([ptr[b] + torch.randperm(int(n[b]), generator=g) for b in range(len(n))])
    o = model(types[perm], x[perm], L, n, batch, t)
    assert (o["frac"] - ref["frac"][perm]).abs().max() < 1e-10
    assert (o["types"] - ref["types"][perm]).abs().max() < 1e-10
    assert (o["lattice"] - ref["lattice"]).abs().max() < 1e-10
    tau = torch.rand(len(n), 3, generator=g, dtype=F64)[batch]
    assert maxdiff(model(types, (x + tau) % 1, L, n, batch, t), ref) < 1e-10
    k = torch.randint(-3, 4, x.shape, generator=g).to(F64)
    assert maxdiff(model(types, x + k, L, n, batch, t), ref) < 1e-9
    for reflect in (False, True):
        R = orthogonal(5, reflect)
        o = model(types, x, L @ R.T, n, batch, t)
        assert (o["frac"] - ref["frac"]).abs().max() < 1e-10
        want = ref["lattice"] if family else ref["lattice"] @ R.T
        assert (o["lattice"] - want).abs().max() < 1e-10
    if family:
        assert (ref["lattice"] - ref["lattice"].transpose(1, 2)).abs().max() < 1e-12
    # the outputs are not trivially constant
    assert maxdiff(model(types, (x + 0.05) % 1 * 0.9, L, n, batch, t), ref) > 1e-4


def test_mask_token_and_bad_inputs():
    model = small(type_input="tokens")
    types, x, L, n, batch, t = rand_batch([3, 2], tokens=True)
    types[:] = MASK_TOKEN
    assert model(types, x, L, n, batch, t)["types"].shape == (5, 100)
    with pytest.raises(ValueError, match="0..100"):
        model(types + 1, x, L, n, batch, t)
    with pytest.raises(ValueError, match="tokens"):
        model(F.one_hot(types, 101).to(F64), x, L, n, batch, t)
    with pytest.raises(ValueError, match="frac_coords"):
        model(types, x[:, :2], L, n, batch, t)


def test_config_roundtrip():
    specs = [dict(name="sg", kind="categorical", num_classes=230), dict(name="gap", kind="scalar", range=(0, 5))]
    model = small(cond_specs=specs, atom_cond_dim=3, adapters=["gap"])
    cfg = json.loads(json.dumps(model.config))
    clone = Denoiser.from_config(cfg).double()
    clone.load_state_dict(model.state_dict())
    types, x, L, n, batch, t = rand_batch([2, 3])
    cond = {"sg": torch.tensor([3, 200]), "gap": torch.tensor([1.0, 2.0])}
    a = model(types, x, L, n, batch, t, cond=cond, atom_cond=torch.ones(5, 3, dtype=F64))
    b = clone(types, x, L, n, batch, t, cond=cond, atom_cond=torch.ones(5, 3, dtype=F64))
    assert maxdiff(a, b) == 0


def test_nulls_and_cfg_pair():
    specs = [dict(name="gap", kind="scalar", range=(0, 6)), dict(name="chemsys", kind="multihot", num_classes=100)]
    model = small(cond_specs=specs, atom_cond_dim=4)
    types, x, L, n, batch, t = rand_batch([3, 4])
    args = (types, x, L, n, batch, t)
    chem = torch.zeros(2, 100, dtype=F64)
    chem[:, [7, 25]] = 1
    cond = {"gap": torch.tensor([1.0, 3.0]), "chemsys": chem}
    dos = torch.randn(7, 4, dtype=F64)
    full = model(*args, cond=cond, atom_cond=dos)
    none = model(*args)
    assert maxdiff(model(*args, cond=cond, atom_cond=dos, drop=torch.tensor([True, True])), none) == 0
    assert maxdiff(full, none) > 1e-6
    oc, ou = model.forward_cfg(*args, cond=cond, atom_cond=dos)
    assert maxdiff(oc, full) < 1e-12 and maxdiff(ou, none) < 1e-12
    # dropping crystal 1's gap leaves crystal 0 untouched
    o = model(*args, cond=cond, atom_cond=dos, drop={"gap": torch.tensor([False, True])})
    assert torch.equal(o["frac"][batch == 0], full["frac"][batch == 0])
    assert (o["frac"][batch == 1] - full["frac"][batch == 1]).abs().max() > 1e-6
    with pytest.raises(ValueError, match="unknown condition"):
        model(*args, cond={"band_gap": torch.ones(2)})
    with pytest.raises(ValueError, match="outside"):
        small(cond_specs=[dict(name="sg", kind="categorical", num_classes=5)])(*args, cond={"sg": torch.tensor([5, 0])})


def test_zero_adapters_equal_base_exactly():
    torch.manual_seed(0)
    base = Denoiser(hidden=48, layers=4, num_freqs=6, time_dim=16)
    types, x, L, n, batch, t = rand_batch([5, 2, 3], dtype=torch.float32)
    ref = base(types, x, L, n, batch, t)
    ft = Denoiser.with_adapters(base, [dict(name="mag", kind="scalar", range=(0, 0.2)),
                                       dict(name="sg", kind="categorical", num_classes=230)])
    out = ft(types, x, L, n, batch, t, cond={"mag": torch.tensor([0.01, 0.1, 0.15]), "sg": torch.tensor([1, 2, 3])})
    for k in ref:
        assert torch.equal(out[k], ref[k])
    trainable = ft.freeze_base()
    assert {id(p) for p in ft.parameters() if p.requires_grad} == {id(p) for p in trainable}
    with torch.no_grad():
        for p in ft.mixin.parameters():
            p.normal_(0, 0.1)
    out = ft(types, x, L, n, batch, t, cond={"mag": torch.tensor([0.01, float("nan"), float("nan")])})
    assert (out["frac"][batch == 0] - ref["frac"][batch == 0]).abs().max() > 1e-4
    assert torch.equal(out["frac"][batch != 0], ref["frac"][batch != 0])


def test_overfits_one_crystal():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([6, 6])
    batch = torch.repeat_interleave(torch.arange(2), n)
    z = torch.tensor([10, 10, 16, 16, 7, 7] * 2)
    x = torch.rand(6, 3, generator=g).repeat(2, 1)
    L = (5 * torch.eye(3) + 0.3 * torch.randn(3, 3, generator=g)).expand(2, 3, 3)
    a = F.one_hot(z, 100).float() + 0.3 * torch.randn(12, 100, generator=g)
    t = torch.tensor([0.2, 0.7])
    target = {"lattice": torch.randn(2, 3, 3, generator=g), "frac": torch.randn(12, 3, generator=g),
              "types": torch.randn(12, 100, generator=g)}
    model = Denoiser(hidden=64, layers=2, num_freqs=8, time_dim=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        out = model(a, x, L, n, batch, t)
        loss = sum(F.mse_loss(out[k], target[k]) for k in target) / 3
        if step == 0:
            first = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.5 and loss.item() < 1e-3
