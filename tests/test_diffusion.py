"""Tests for xtalnb.diffusion, each against an independent derivation (autograd, explicit matrices, Monte Carlo, closed forms)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from xtalnb.crystal import Crystal, CrystalBatch
from xtalnb.diffusion import (MASK, CrystalDiffusion, D3PMAbsorbing, GaussianVP, WrappedNormalVE, cosine_beta_schedule,
                              fit_lattice_limit, geometric_sigmas, lambda_schedule, linear_beta_schedule, polar_decomposition,
                              symmetric_randn, wrapped_normal_log_prob, wrapped_normal_score, wrapped_normal_score_sq_mc)

torch.set_num_threads(1)
F64 = torch.float64


def _crystals(n=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 9))
        L = np.diag(rng.uniform(3, 7, 3)) + rng.normal(0, 0.4, (3, 3))
        if np.linalg.det(L) < 0: L[2] *= -1
        out.append(Crystal(rng.integers(1, 95, k), rng.random((k, 3)), L))
    return out


@pytest.fixture(scope="module")
def batch():
    return CrystalBatch.from_crystals(_crystals())


def _explicit_logpdf(x, mu, s, K=30):
    k = torch.arange(-K, K + 1, dtype=F64)
    return torch.logsumexp(-(x[:, None] - mu[:, None] + k) ** 2 / (2 * s * s), -1) - 0.5 * math.log(2 * math.pi * s * s)


@pytest.mark.parametrize("s", [0.002, 0.04, 0.25, 0.7, 3.0])
def test_wrapped_normal_score_matches_autograd(s):
    g = torch.Generator().manual_seed(3)
    mu = torch.rand(400, dtype=F64, generator=g)
    x = torch.remainder(mu + min(s, 1.0) * 2 * torch.randn(400, dtype=F64, generator=g), 1.0)
    xr = x.clone().requires_grad_(True)
    logp = _explicit_logpdf(xr, mu, s)
    ref, = torch.autograd.grad(logp.sum(), xr)
    torch.testing.assert_close(wrapped_normal_score(x, mu, s), ref, rtol=1e-7, atol=1e-7 / s**2)
    torch.testing.assert_close(wrapped_normal_log_prob(x, mu, s), logp.detach(), rtol=1e-9, atol=1e-9)


def test_lambda_matches_quadrature_and_is_fast():
    for s in [0.02, 0.2, 0.45]:
        n = 40000
        x = ((torch.arange(n, dtype=F64) + 0.5) / n).requires_grad_(True)
        logp = _explicit_logpdf(x, torch.zeros(n, dtype=F64), s)
        sc, = torch.autograd.grad(logp.sum(), x)
        quad = float((logp.detach().exp() * sc**2).mean())
        mc = float(wrapped_normal_score_sq_mc([s])[0])
        assert abs(mc - quad) < 0.03 * quad, (s, mc, quad)
    lam = lambda_schedule(200, 0.005, 0.5)
    assert lam.shape == (201,) and torch.isfinite(lam).all()


def test_vp_forward_marginal_matches_markov_chain():
    g = torch.Generator().manual_seed(0)
    M, steps, n, c, nu = 8000, 120, 6, 18.0, 0.2
    proc = GaussianVP(linear_beta_schedule(1000), symmetric=True, limit="mattergen", density_c=c, nu=nu)
    mu = (n * c) ** (1 / 3) * torch.eye(3, dtype=F64); sd = (n * nu) ** (1 / 3)
    L0 = torch.tensor([[4.0, 0.5, 0.0], [0.5, 5.0, -0.3], [0.0, -0.3, 3.5]], dtype=F64).expand(M, 3, 3).clone()
    x = L0.clone()
    for s in range(1, steps + 1):
        b = float(proc.beta[s])
        x = math.sqrt(1 - b) * x + (1 - math.sqrt(1 - b)) * mu + math.sqrt(b) * sd * symmetric_randn(M, g, dtype=F64)
    xq, eps = proc.q_sample(L0, torch.full((M,), steps), torch.full((M,), n), g)
    torch.testing.assert_close(xq, xq.transpose(-1, -2))
    torch.testing.assert_close(eps, eps.transpose(-1, -2))
    se = float(x.std(0).max()) / math.sqrt(M)
    assert (xq.mean(0) - x.mean(0)).abs().max() < 6 * se
    assert ((xq.var(0) - x.var(0)).abs() / x.var(0)).max() < 0.1


def test_cosine_schedule_closed_form():
    T = 1000
    ab = torch.cumprod(1 - cosine_beta_schedule(T), 0)
    t = torch.arange(T + 1, dtype=F64)
    f = torch.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(ab[10:900], (f / f[0])[10:900], rtol=1e-3, atol=1e-4)
    sig = geometric_sigmas(T, 0.005, 0.5)
    assert sig[0] == 0 and abs(float(sig[1]) - 0.005) < 1e-12 and abs(float(sig[T]) - 0.5) < 1e-12


def test_ve_forward_marginal_matches_chain():
    g = torch.Generator().manual_seed(1)
    wn = WrappedNormalVE(1000, 0.005, 0.5)
    M = 8000
    x0 = torch.rand(M, 3, dtype=F64, generator=g)
    x = x0.clone()
    for s in range(1, 501):
        x = torch.remainder(x + math.sqrt(float(wn.sigma[s] ** 2 - wn.sigma[s - 1] ** 2)) * torch.randn(M, 3, generator=g, dtype=F64), 1)
    xq, tgt = wn.q_sample(x0, torch.full((M,), 500), generator=g)
    closed = math.exp(-2 * math.pi**2 * float(wn.sigma[500]) ** 2)
    for y in (x, xq):
        assert abs(float(torch.cos(2 * math.pi * (y - x0)).mean()) - closed) < 4 / math.sqrt(3 * M)
    d = lambda y: (y - x0 - torch.round(y - x0)).flatten().numpy()
    assert stats.ks_2samp(d(x), d(xq)).pvalue > 1e-3
    # normalised target: unit second moment; score_from_output recovers the score
    assert abs(float((tgt**2).mean()) - 1) < 0.1
    torch.testing.assert_close(wn.score_from_output(tgt, torch.full((M,), 500)),
                               wrapped_normal_score(xq, x0, float(wn.sigma[500])))


def test_d3pm_qbar_is_product_and_posterior_is_bayes():
    T, K = 30, 5
    d3 = D3PMAbsorbing(T, num_classes=K)

    def Q(t):  # eq. A17 written out independently
        b = 1 / (T - t + 1)
        m = torch.zeros(K + 1, K + 1, dtype=F64)
        for i in range(K + 1):
            for j in range(K + 1):
                m[i, j] = 1.0 if i == j == K else (1 - b) if i == j else b if j == K else 0.0
        return m

    prods = [torch.eye(K + 1, dtype=F64)]
    for t in range(1, T + 1):
        prods.append(prods[-1] @ Q(t))
        torch.testing.assert_close(d3.Q_bar(t), prods[t])
        torch.testing.assert_close(d3.Q(t), Q(t))
    torch.testing.assert_close(prods[T][:, K], torch.ones(K + 1, dtype=F64))
    for t in [1, 2, 11, T]:
        for a0 in range(K):
            for at in range(K + 1):
                if prods[t][a0, at] == 0: continue
                bayes = Q(t)[:, at] * prods[t - 1][a0] / prods[t][a0, at]
                post = d3.posterior(torch.tensor([at]), torch.nn.functional.one_hot(torch.tensor([a0]), K).to(F64), torch.tensor([t]))[0]
                torch.testing.assert_close(post, bayes)
    g = torch.Generator().manual_seed(0)
    p0 = torch.softmax(torch.randn(200, K, generator=g, dtype=F64), -1)
    post = d3.posterior(torch.randint(0, K + 1, (200,), generator=g), p0, torch.randint(1, T + 1, (200,), generator=g))
    torch.testing.assert_close(post.sum(-1), torch.ones(200, dtype=F64))


def test_d3pm_loss_closed_forms():
    D = D3PMAbsorbing(1000, lambda_ce=0.01)
    a0 = torch.arange(100)
    m = torch.full((100,), MASK)
    z = torch.zeros(100, 100)
    torch.testing.assert_close(D.loss(z, a0, m, torch.ones(100, dtype=torch.long)), torch.full((100,), 1.01 * math.log(100)))
    torch.testing.assert_close(D.loss(z, a0, m, torch.full((100,), 2)), torch.full((100,), 0.51 * math.log(100)))
    perfect = torch.nn.functional.one_hot(a0, 100).float() * 40
    assert float(D.loss(perfect, a0, m, torch.full((100,), 500)).abs().max()) < 1e-6


@pytest.mark.parametrize("family", ["diffcsp", "mattergen"])
def test_limit_distributions_reached_at_T(family):
    big = CrystalBatch.from_crystals(_crystals(300, seed=5))
    diff = CrystalDiffusion(family)
    noisy, _ = diff.q_sample(big, diff.T, torch.Generator().manual_seed(2))
    assert stats.kstest(noisy["frac"].double().flatten().numpy(), "uniform").pvalue > 1e-3
    if family == "diffcsp":
        assert stats.kstest(noisy["lattice"].double().flatten().numpy(), "norm").pvalue > 1e-3
        assert stats.kstest(noisy["types"][:500].double().flatten().numpy(), "norm").pvalue > 1e-3
    else:
        n = big.num_atoms.double()[:, None, None]
        y = (noisy["lattice"].double() - (n * 20.0) ** (1 / 3) * torch.eye(3, dtype=F64)) / (n * 0.125) ** (1 / 3)
        torch.testing.assert_close(y, y.transpose(-1, -2), rtol=0, atol=1e-5)
        iu = torch.triu_indices(3, 3)
        assert stats.kstest(y[:, iu[0], iu[1]].flatten().numpy(), "norm").pvalue > 1e-3
        assert (noisy["types"] == MASK).all()


def test_mattergen_lattice_stays_symmetric(batch):
    diff = CrystalDiffusion("mattergen")
    g = torch.Generator().manual_seed(0)
    for t in [1, 300, 1000]:
        noisy, tg = diff.q_sample(batch, t, g)
        torch.testing.assert_close(noisy["lattice"], noisy["lattice"].transpose(-1, -2), rtol=0, atol=1e-5)
    out = {"lattice": torch.randn(len(batch), 3, 3, generator=g), "frac": torch.zeros_like(noisy["frac"]),
           "types": torch.zeros(noisy["frac"].shape[0], 100)}
    nb = batch.num_atoms.clone()
    new = diff.predictor_step(noisy, out, torch.full((len(batch),), 500), nb, batch.batch, g)
    torch.testing.assert_close(new["lattice"], new["lattice"].transpose(-1, -2), rtol=0, atol=1e-5)


def test_polar_decomposition_and_fit():
    g = torch.Generator().manual_seed(0)
    L = torch.randn(20, 3, 3, generator=g, dtype=F64) + 4 * torch.eye(3, dtype=F64)
    S, Q = polar_decomposition(L)
    torch.testing.assert_close(S @ Q, L)
    torch.testing.assert_close(S, S.transpose(-1, -2))
    assert (torch.linalg.eigvalsh(S) > 0).all()
    torch.testing.assert_close(Q @ Q.transpose(-1, -2), torch.eye(3, dtype=F64).expand(20, 3, 3))
    cr = _crystals(10)
    c, nu = fit_lattice_limit(cr)
    assert abs(c - np.mean([abs(np.linalg.det(x.lattice)) / x.num_atoms for x in cr])) < 1e-10 and nu > 0


@pytest.mark.parametrize("family", ["diffcsp", "mattergen"])
def test_oracle_reverse_recovers_template_and_is_seeded(family, batch):
    diff = CrystalDiffusion(family)
    x0 = diff.clean_fields(batch)
    B = len(batch)

    def oracle(noisy, t):
        ta, na = t[batch.batch], batch.num_atoms[batch.batch]
        n = batch.num_atoms.double()[:, None, None]
        if family == "mattergen":
            mu, sd = (n * 20.0) ** (1 / 3) * torch.eye(3, dtype=F64), (n * 0.125) ** (1 / 3)
        else:
            mu, sd = 0.0, 1.0
        ab = diff.lattice.alpha_bar[t][:, None, None]
        eL = (((noisy["lattice"] - mu) / sd) - ab.sqrt() * (x0["lattice"] - mu) / sd) / (1 - ab).sqrt()
        s = diff.frac.sigma[ta][:, None] / (na.double()[:, None] ** (1 / 3) if family == "mattergen" else 1)
        k = s if family == "mattergen" else diff.frac.lam[ta].sqrt()[:, None]
        oX = k * wrapped_normal_score(noisy["frac"].double(), x0["frac"].double(), s)
        if family == "mattergen":
            oA = torch.nn.functional.one_hot(x0["types"], 100).float() * 40
        else:
            abA = diff.types.alpha_bar[ta][:, None]
            oA = (noisy["types"] - abA.sqrt() * x0["types"]) / (1 - abA).sqrt()
        return {"lattice": eL.float(), "frac": oX.float(), "types": oA.float()}

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        st = diff.template_start(batch, 80, g)
        for s in range(80, 0, -1):
            t = torch.full((B,), s)
            st = diff.corrector_step(st, oracle(st, t), t, batch.num_atoms, batch.batch, 1e-5, g)
            st = diff.predictor_step(st, oracle(st, t), t, batch.num_atoms, batch.batch, g)
        return st

    a, b = run(7), run(7)
    for k in a: assert torch.equal(a[k], b[k])
    dX = a["frac"] - x0["frac"]; dX = dX - torch.round(dX)
    # the last ancestral step (mattergen) leaves noise of std ~σ_1(n); the DiffCSP posterior step ends noise-free
    tol = 6 * diff.frac.sigma_t(torch.ones_like(batch.batch), batch.num_atoms[batch.batch]) + 0.005
    assert (dX.abs() < tol).all(), float((dX.abs() - tol).max())
    assert float((a["lattice"] - x0["lattice"]).abs().max()) < 0.05
    assert torch.equal(diff.decode(a, batch.num_atoms, batch.batch).atomic_numbers, batch.atomic_numbers)


def test_losses_shapes_and_oracle(batch):
    for family in ["diffcsp", "mattergen"]:
        diff = CrystalDiffusion(family)
        g = torch.Generator().manual_seed(0)
        noisy, tg = diff.q_sample(batch, diff.sample_t(len(batch), g), g)
        oracle = {"lattice": tg["lattice"], "frac": tg["frac"],
                  "types": torch.nn.functional.one_hot(tg["types"], 100).float() * 40 if family == "mattergen" else tg["types"]}
        rows = diff.loss_rows(oracle, tg, batch)
        assert rows["lattice"].shape == (len(batch),) and rows["frac"].shape == (batch.frac_coords.shape[0],)
        ls = diff.losses(oracle, tg, batch)
        assert all(float(v) < 1e-3 for v in ls.values())
        assert CrystalDiffusion.from_config(diff.config).config == diff.config


def test_bad_inputs_raise(batch):
    with pytest.raises(ValueError, match="family"): CrystalDiffusion("cdvae")
    diff = CrystalDiffusion("diffcsp")
    with pytest.raises(ValueError, match="1..1000"): diff.q_sample(batch, torch.zeros(len(batch), dtype=torch.long))
    with pytest.raises(ValueError, match="integer"): diff.q_sample(batch, torch.ones(len(batch)))
    with pytest.raises(ValueError, match="shape"): diff.q_sample(batch, torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="sigma_1 < sigma_T"): geometric_sigmas(10, 0.5, 0.1)
    with pytest.raises(ValueError, match="normaliser"): WrappedNormalVE(10, scale_by_atoms=True, normaliser="lambda")
    with pytest.raises(ValueError, match="MASK"): D3PMAbsorbing(10).q_sample(torch.tensor([100]), torch.tensor([3]))
    with pytest.raises(ValueError, match="positive atom counts"): diff.prior(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lacks"): diff.losses({"lattice": None}, {}, batch)
