"""Exact score oracles: formulas, resolution independence, DSM minimum, mixtures."""

import math

import pytest
import torch

import fsdiff as fd
from fsdiff.oracles import GaussianMixtureScore, GaussianScore
from fsdiff.sampling import time_steps

Q = fd.Matern(alpha=2.0, tau=3.0)
C = fd.Matern(alpha=2.5, tau=5.0, sigma=4.0)
SDE = fd.VPSDE(Q)


def mean_fn(grid):
    x = grid.mesh()[0]
    return 0.5 * torch.sin(2 * math.pi * x) + 0.2 * torch.cos(6 * math.pi * x)


pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_gaussian_score_matches_per_mode_formula():
    g = fd.Grid(31)
    orc = GaussianScore(SDE, C, mean=mean_fn)
    x = torch.randn(3, 2, 31, generator=gen(0), dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    eta = orc(x, t, g)
    m, s = SDE.mean_scale(t), SDE.std(t)
    v = m[:, None] ** 2 * C.eigenvalues(g) + s[:, None] ** 2 * Q.eigenvalues(g)
    r = g.rfft(x - m[:, None, None] * mean_fn(g))
    expect = g.irfft(r * (s[:, None] * Q.eigenvalues(g) / v)[:, None])
    torch.testing.assert_close(eta, expect, rtol=1e-12, atol=1e-14)
    # the conversion goes through parametrization: Tweedie x0_hat = (x - s eta)/m
    torch.testing.assert_close(orc.denoise(x, t, g), (x - s[:, None, None] * eta) / m[:, None, None])


def test_gaussian_score_is_resolution_independent():
    """Band-limited input: the coarse output is the restriction of the fine output."""
    fine, coarse = fd.Grid((64, 64)), fd.Grid((16, 16))
    orc = GaussianScore(SDE, C, mean=mean_fn(fine), mean_grid=fine)
    x_c = C.sample(coarse, 4, 1, generator=gen(1), dtype=torch.float64)
    x_f = fd.resample(x_c, coarse, fine)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    out_f = orc(x_f, t, fine)
    out_c = orc(x_c, t, coarse)
    # the mean has content beyond the coarse modes, so compare on the coarse modes
    torch.testing.assert_close(fd.resample(out_f, fine, coarse), out_c, rtol=1e-10, atol=1e-12)


def test_pseudo_inverse_where_both_spectra_vanish():
    """LaplacianPower data and noise both have lambda_0 = 0: no NaN, zero-mode score 0."""
    sde = fd.VPSDE(fd.LaplacianPower(power=1.5))
    orc = GaussianScore(sde, fd.LaplacianPower(power=2.0))
    g = fd.Grid(16)
    x = torch.randn(2, 1, 16, generator=gen(2), dtype=torch.float64) + 3.0  # non-zero mean
    eta = orc(x, torch.full((2,), 0.5, dtype=torch.float64), g)
    assert torch.isfinite(eta).all()
    assert eta.mean(dim=-1).abs().max() < 1e-12


def test_dsm_minimum_matches_monte_carlo():
    """E||eta_hat - eta||² at the oracle equals the analytic minimum (MC, 6 SE)."""
    g = fd.Grid((24, 24))
    orc = GaussianScore(SDE, C, mean=mean_fn)
    n = 4000
    x0 = C.sample(g, n, 1, generator=gen(3), dtype=torch.float64) + mean_fn(g)
    for t in (0.05, 0.5):
        xt, eta = SDE.perturb(x0, t, g, generator=gen(4))
        err = g.norm(orc(xt, torch.full((n,), t, dtype=torch.float64), g) - eta) ** 2
        se = float(err.std()) / math.sqrt(n)
        expect = float(orc.expected_dsm_minimum(t, g))
        assert abs(float(err.mean()) - expect) < 6 * se, (t, float(err.mean()), expect, se)
        # a perturbed predictor does worse (paired difference, 6 SE): the check can fail
        worse = g.norm(2.0 * orc(xt, torch.full((n,), t, dtype=torch.float64), g) - eta) ** 2
        diff = worse - err
        assert float(diff.mean()) > 6 * float(diff.std()) / math.sqrt(n)
    # converges under refinement, bounded by channels * trace(Q)
    vals = [float(orc.expected_dsm_minimum(0.5, fd.Grid((N, N)))) for N in (32, 64, 128)]
    assert abs(vals[2] - vals[1]) < 0.2 * abs(vals[1] - vals[0]) + 1e-12
    assert vals[2] < Q.trace(2)
    tt = torch.tensor([0.05, 0.5])
    torch.testing.assert_close(orc.expected_dsm_minimum(tt, g, channels=3),
                               3 * torch.stack([orc.expected_dsm_minimum(float(s), g) for s in tt]))


def test_em_chain_moments_converge_to_exact_marginal():
    g = fd.Grid(64)
    orc = GaussianScore(SDE, C, mean=mean_fn)
    v_eps = orc.marginal_eigenvalues(1e-3, g)
    errs = []
    for steps in (100, 400):
        M, V = orc.em_chain_moments(time_steps(SDE, steps, 1e-3, "quadratic"), g, start="exact")
        mask = g.mode_mask
        errs.append(float(((V - v_eps).abs()[mask] / v_eps[mask]).max()))
        mu_eps = float(SDE.mean_scale(1e-3)) * g.rfft(mean_fn(g))
        assert float((M - mu_eps).abs().max()) < 0.05 * float(mu_eps.abs().max())
    assert errs[1] < 0.35 * errs[0]  # weak order ~1: 4x steps -> ~4x smaller


def _mixture(grid):
    x = grid.mesh()[0]
    means = torch.stack([torch.sin(2 * math.pi * x), -torch.sin(2 * math.pi * x), torch.cos(4 * math.pi * x)])[:, None]
    return GaussianMixtureScore(SDE, 0.6 * means, grid, torch.tensor([0.5, 0.3, 0.2]), fd.Matern(2.5, 5.0, sigma=2.0))


def test_mixture_posterior_matches_finite_dimensional_density():
    """On an odd grid (no dropped Nyquist) the Cameron–Martin logits equal MultivariateNormal log-densities."""
    g = fd.Grid(15)
    mix = _mixture(g)
    t = 0.2
    v = mix.marginal_eigenvalues(t, g) / g.volume  # E|x_hat_k|²
    # grid covariance matrix K_ij = sum_k v_k exp(2 pi i k (x_i - x_j))
    kern = g.irfft(v.to(torch.complex128))  # (15,), stationary kernel on the grid
    idx = torch.arange(15)
    K = kern[(idx[:, None] - idx[None, :]) % 15]
    m = float(SDE.mean_scale(t))
    x = mix.sample(g, 5, generator=gen(5), dtype=torch.float64)[0] * 0.7
    lp = torch.stack([torch.distributions.MultivariateNormal(m * mu[0], K).log_prob(x[:, 0]) for mu in mix.means_on(g)], 1)
    expect = torch.log_softmax(lp + mix.weights.log(), dim=1)
    torch.testing.assert_close(mix.log_posterior_weights(x, t, g), expect, rtol=1e-8, atol=1e-8)


def test_mixture_is_resolution_independent_and_single_component_reduces_to_gaussian():
    fine, coarse = fd.Grid(256), fd.Grid(32)
    mix = _mixture(coarse)
    x_c, comp = mix.sample(coarse, 64, generator=gen(6), dtype=torch.float64)
    x_f, comp_f = mix.sample(fine, 64, generator=gen(6), dtype=torch.float64)
    assert torch.equal(comp, comp_f)
    torch.testing.assert_close(fd.resample(x_f, fine, coarse), x_c)  # nested draws
    # posterior of a band-limited input is the same on both grids
    t = 0.3
    torch.testing.assert_close(mix.log_posterior_weights(fd.resample(x_c, coarse, fine), t, fine),
                               mix.log_posterior_weights(x_c, t, coarse), rtol=1e-9, atol=1e-9)
    # exact samples are classified correctly (well separated means)
    assert (mix.classify(x_c, coarse) == comp).float().mean() > 0.97
    # K = 1 reduces to GaussianScore with that mean
    one = GaussianMixtureScore(SDE, mix.means[:1], coarse, [1.0], mix.cov)
    gs = GaussianScore(SDE, mix.cov, mean=mix.means[0], mean_grid=coarse)
    tt = torch.full((64,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(one(x_c, tt, coarse), gs(x_c, tt, coarse))


def test_oracle_errors():
    g = fd.Grid(16)
    with pytest.raises(ValueError, match="mean_grid"):
        GaussianScore(SDE, C, mean=torch.zeros(16))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixtureScore(SDE, torch.zeros(2, 1, 16), g, [1.0], C)
    with pytest.raises(ValueError, match="positive"):
        GaussianMixtureScore(SDE, torch.zeros(2, 1, 16), g, [1.0, -1.0], C)
    orc = GaussianScore(SDE, C, mean=torch.zeros(16), mean_grid=g)
    with pytest.raises(ValueError, match="1-D"):
        orc(torch.zeros(1, 1, 8, 8), torch.zeros(1), fd.Grid((8, 8)))
    with pytest.raises(ValueError, match="expects"):
        orc(torch.zeros(1, 1, 8), torch.zeros(1), g)
