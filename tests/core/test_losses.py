"""Denoising score matching: quadrature consistency across grids, the Gaussian minimum, time sampling."""

import math

import pytest
import torch
from torch import nn

import fsdiff as fd
from fsdiff.losses import dsm_loss, loss_weight, sample_time

pytestmark = pytest.mark.usefixtures("single_thread")



class SpectralMultiplier(nn.Module):
    """Stand-in score model: ``eta_hat = irfft((w0 + t w1) * rfft(x_t))`` on modes ``|k_i| <= K``.

    Maps band-limited functions to band-limited functions, at any resolution."""

    def __init__(self, K: int = 4, ndim: int = 2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        shape = (2 * K + 1,) * (ndim - 1) + (K + 1,)
        self.K = K
        self.w0 = nn.Parameter(torch.randn(shape, generator=g))
        self.w1 = nn.Parameter(torch.randn(shape, generator=g))

    def multiplier(self, t: torch.Tensor, grid: fd.Grid) -> torch.Tensor:
        ks = grid.wavenumbers
        inside = torch.ones(grid.rfft_shape, dtype=torch.bool)
        for k in ks:
            inside = inside & (k.abs() <= self.K)
        idx = tuple(torch.where(inside, (k + self.K if i < grid.ndim - 1 else k), 0).expand(grid.rfft_shape)
                    for i, k in enumerate(ks))
        m0 = torch.where(inside, self.w0[idx], 0.0)
        m1 = torch.where(inside, self.w1[idx], 0.0)
        return m0 + t.reshape(-1, 1, *[1] * grid.ndim) * m1  # (B, 1, *rfft_shape)

    def forward(self, x, t, grid):
        return grid.irfft(grid.rfft(x) * self.multiplier(t.to(x.dtype), grid))


def test_dsm_loss_is_consistent_across_resolutions():
    """Band-limited x0, nested noise, a band-limited model: the quadrature loss is the same L² number."""
    g16, g32, g64 = fd.Grid((16, 16)), fd.Grid((32, 32)), fd.Grid((64, 64))
    data_cov = fd.Matern(alpha=2.0, tau=3.0, sigma=20.0)
    x16 = data_cov.sample(g16, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = SpectralMultiplier(K=5).double()
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    # (a) noise band-limited below both grids' cutoffs: identical functions, identical losses
    sde = fd.VPSDE(fd.RandomSpectral(modes=(10, 10), seed=3))
    losses = []
    for g in (g32, g64):
        x0 = fd.resample(x16, g16, g)
        losses.append(dsm_loss(model, x0, sde, g, generator=torch.Generator().manual_seed(7), t=t))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=0)
    assert losses[0].min() > 0.1  # a real, non-trivial error
    # (b) Matérn noise: the fine loss adds exactly the noise energy in the modes the coarse grid lacks
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=2.0))
    out = {}
    for g in (g32, g64):
        gen = torch.Generator().manual_seed(7)
        x0 = fd.resample(x16, g16, g)
        out[g.shape] = dsm_loss(model, x0, sde, g, generator=gen, t=t)
        eta = sde.covariance.sample(g, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        out[(g.shape, "eta")] = eta
    eta64 = out[((64, 64), "eta")]
    tail = eta64 - fd.resample(fd.resample(eta64, g64, g32), g32, g64)
    torch.testing.assert_close(out[(64, 64)] - out[(32, 32)], g64.inner(tail, tail), rtol=1e-8, atol=1e-12)
    # the tail is small next to the loss: the loss converges under refinement
    assert (g64.inner(tail, tail) / out[(64, 64)]).max() < 0.05


def _gaussian_posterior_model(sde, data_cov):
    """Exact E[eta | x_t] for x0 ~ N(0, C): per mode ``s lam_Q / (m² lam_C + s² lam_Q) x_t``."""

    def model(x, t, grid):
        lq, lc = sde.covariance.eigenvalues(grid), data_cov.eigenvalues(grid)
        m = sde.mean_scale(t).reshape(-1, 1, *[1] * grid.ndim)
        s = sde.std(t).reshape(-1, 1, *[1] * grid.ndim)
        den = m**2 * lc + s**2 * lq
        mult = torch.where(den > 0, s * lq / torch.where(den > 0, den, 1.0), 0.0)
        return grid.irfft(grid.rfft(x.double()) * mult).to(x.dtype)

    return model


def _analytic_minimum(sde, data_cov, t: float, grid) -> float:
    lq, lc = sde.covariance.eigenvalues(grid), data_cov.eigenvalues(grid)
    m2, s2 = float(sde.mean_scale(t)) ** 2, float(sde.std(t)) ** 2
    den = m2 * lc + s2 * lq
    per_mode = torch.where(den > 0, lq * m2 * lc / torch.where(den > 0, den, 1.0), 0.0)
    return float((per_mode * grid.rfft_weights).sum())


@pytest.mark.parametrize("t", [0.05, 0.4])
def test_dsm_loss_at_exact_posterior_mean_equals_analytic_minimum(t):
    g = fd.Grid((16, 16))
    data_cov = fd.Matern(alpha=1.5, tau=4.0, sigma=30.0)
    sde = fd.VPSDE(fd.Matern(alpha=2.0, tau=3.0, sigma=10.0))
    x0 = data_cov.sample(g, 4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = dsm_loss(_gaussian_posterior_model(sde, data_cov), x0, sde, g, generator=torch.Generator().manual_seed(1), t=t)
    mean, se = float(loss.mean()), float(loss.std() / math.sqrt(len(loss)))
    expected = _analytic_minimum(sde, data_cov, t, g)
    assert abs(mean - expected) < 4 * se, (mean, expected, se)
    # the posterior mean for a wrong data law has a larger loss on the same (x0, t, eta): paired difference
    wrong = _gaussian_posterior_model(sde, fd.Matern(alpha=1.5, tau=4.0, sigma=10.0))
    diff = dsm_loss(wrong, x0, sde, g, generator=torch.Generator().manual_seed(1), t=t) - loss
    assert float(diff.mean()) > 5 * float(diff.std() / math.sqrt(len(diff)))


@pytest.mark.parametrize("t", [0.05, 0.4])
def test_dsm_loss_at_gaussian_score_oracle_equals_its_minimum(t):
    oracles = pytest.importorskip("fsdiff.oracles", reason="fsdiff.oracles (GaussianScore) not written yet")
    g = fd.Grid((16, 16))
    data_cov = fd.Matern(alpha=1.5, tau=4.0, sigma=30.0)
    sde = fd.VPSDE(fd.Matern(alpha=2.0, tau=3.0, sigma=10.0))
    oracle = oracles.GaussianScore(sde, data_cov)
    x0 = data_cov.sample(g, 4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = dsm_loss(oracle, x0, sde, g, generator=torch.Generator().manual_seed(1), t=t)
    mean, se = float(loss.mean()), float(loss.std() / math.sqrt(len(loss)))
    expected = float(oracle.expected_dsm_minimum(t, g))
    assert abs(mean - expected) < 4 * se, (mean, expected, se)
    assert expected == pytest.approx(_analytic_minimum(sde, data_cov, t, g), rel=1e-6)


def test_time_sampling_densities_and_determinism():
    sde = fd.VPSDE(fd.Matern())
    state = torch.random.get_rng_state()
    t = sample_time(20000, sde, torch.Generator().manual_seed(0), "uniform", eps=1e-3)
    assert t.dtype == torch.float32 and float(t.min()) >= 1e-3 and float(t.max()) <= 1.0
    assert abs(float(t.mean()) - 0.5005) < 0.01
    t2 = sample_time(20000, sde, torch.Generator().manual_seed(0), "log_std", eps=1e-3)
    ls = torch.log(sde.std(t2.double()))
    lo, hi = math.log(float(sde.std(1e-3))), math.log(float(sde.std(1.0)))
    u = (ls - lo) / (hi - lo)  # uniform on [0, 1] if log s(t) is uniform
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    assert float(t2.median()) < 0.2  # most mass at small times
    torch.testing.assert_close(t, sample_time(20000, sde, torch.Generator().manual_seed(0)))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG was not touched
    with pytest.raises(ValueError, match="time_sampling"):
        sample_time(3, sde, None, "cosine")


def test_weightings_rescale_the_eta_loss():
    g = fd.Grid((16, 16))
    sde = fd.VPSDE(fd.Matern())
    x0 = fd.Matern(sigma=5.0).sample(g, 5, generator=torch.Generator().manual_seed(0))
    model = SpectralMultiplier(K=3)
    kw = dict(sde=sde, grid=g, t=torch.linspace(0.1, 1, 5))
    base = dsm_loss(model, x0, generator=torch.Generator().manual_seed(2), **kw)
    for w in ("score", "likelihood"):
        other = dsm_loss(model, x0, generator=torch.Generator().manual_seed(2), weighting=w, **kw)
        torch.testing.assert_close(other, base * loss_weight(kw["t"], sde, w).float())
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(model, x0, weighting="snr", **kw)
    with pytest.raises(ValueError, match="shape"):
        dsm_loss(model, x0, sde, fd.Grid((8, 8)))


def test_edm_uniform_time_sampling_is_the_even_mixture_of_its_two_densities():
    from scipy.stats import norm

    from fsdiff.losses import EDM_P_MEAN, EDM_P_STD
    from fsdiff.sampling.timesteps import noise_level

    sde, eps = fd.VPSDE(fd.Matern()), 1e-3
    t = sample_time(40000, sde, torch.Generator().manual_seed(3), "edm_uniform", eps=eps).double()
    assert float(t.min()) >= eps - 1e-7 and float(t.max()) <= 1.0
    for q in (0.01, 0.05, 0.2, 0.5, 0.8, 0.99):  # closed-form CDF: the mean of the log-normal's and the uniform's
        edm_cdf = norm.cdf((math.log(float(noise_level(sde, torch.tensor(q, dtype=torch.float64)))) - EDM_P_MEAN) / EDM_P_STD)
        expected = 0.5 * edm_cdf + 0.5 * (q - eps) / (1 - eps)
        assert abs(float((t <= q).double().mean()) - expected) < 0.01, (q, expected)
    torch.testing.assert_close(t.float(), sample_time(40000, sde, torch.Generator().manual_seed(3), "edm_uniform", eps=eps))
