"""Nonlinear DSM (fsdiff.points.ndsm): reference fit, VP special case, unbiasedness of the
one-step loss gradient, and the control variate's variance reduction."""

from __future__ import annotations

import math

import pytest
import torch

import fsdiff as fd
from fsdiff.points.mlp import MLPScore
from fsdiff.points.ndsm import (
    NDSM,
    ReferenceMixture,
    fit_reference_mixture,
    ndsm_loss,
    ndsm_sample,
    per_sample_gradients,
    point_dsm_loss,
    standard_normal_reference,
)
from fsdiff.points.toy import imbalanced_mixture

pytestmark = pytest.mark.usefixtures("single_thread")
SDE = fd.VPSDE(fd.White())
MU0, A0 = torch.tensor([1.0, -0.5]), 0.4  # Gaussian data N(MU0, A0² I)


def _gauss_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact VP score for N(MU0, A0² I) data."""
    m, s = SDE.mean_scale(t).to(x.dtype)[:, None], SDE.std(t).to(x.dtype)[:, None]
    return -(x - m * MU0) / (m**2 * A0**2 + s**2)


def _model(seed: int = 0) -> MLPScore:
    torch.manual_seed(seed)  # parameter init only (tests); data noise comes from generators
    return MLPScore(2, SDE, hidden=16, depth=2, n_freq=2)


def test_reference_fit_recovers_weights():
    gen = torch.Generator().manual_seed(0)
    x, _ = imbalanced_mixture(3000, gen, return_labels=True)
    for method in ("kmeans", "em"):
        mix = fit_reference_mixture(x, 3, method=method, generator=gen)
        w = torch.sort(mix.weights, descending=True).values
        assert torch.allclose(w, torch.tensor([0.8, 0.15, 0.05], dtype=torch.float64), atol=0.02), (method, w)
        assert torch.allclose(mix.variances.sqrt(), torch.full((3,), 0.15, dtype=torch.float64), rtol=0.1)
    # the mixture's closed-form score is the gradient of its log density
    xx = x[:5].double().requires_grad_(True)
    g = torch.autograd.grad(mix.log_prob(xx).sum(), xx)[0]
    torch.testing.assert_close(mix.score(xx.detach()), g)


def test_reference_fit_restarts_escape_a_bad_local_optimum():
    # seed 4: a single k-means++ start puts two centres on the 0.8 cluster (weights ~0.45/0.36/0.19)
    x = imbalanced_mixture(1000, torch.Generator().manual_seed(4))
    one = fit_reference_mixture(x, 3, generator=torch.Generator().manual_seed(4), n_init=1)
    five = fit_reference_mixture(x, 3, generator=torch.Generator().manual_seed(4), n_init=5)
    # the first restart of n_init=5 is the n_init=1 fit, so the kept fit is at least as likely
    assert float(five.log_prob(x.double()).mean()) >= float(one.log_prob(x.double()).mean())
    w = torch.sort(five.weights, descending=True).values
    assert torch.allclose(w, torch.tensor([0.8, 0.15, 0.05], dtype=torch.float64), atol=0.03), w
    with pytest.raises(ValueError, match="n_init"):
        fit_reference_mixture(x, 3, n_init=0)


def test_standard_normal_reference_is_vp():
    proc = NDSM(standard_normal_reference(2), SDE, steps=50)
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(proc.drift(x, 7), float(SDE.drift_coeff(proc.times[7])) * x)
    with pytest.raises(ValueError):
        ReferenceMixture(torch.ones(2), torch.zeros(3, 2), torch.ones(2))


def test_ndsm_gradient_matches_dsm_in_expectation():
    """pi_ref = N(0, I), t = 0.5: mean loss gradients of NDSM (with and without control variate),
    standard DSM and the noise-free reference grad E|s - grad log p_t|² agree.
    Tolerances (relative L2 over all parameters): DSM and NDSM+CV 10%, NDSM without CV 25%
    (EM bias of the chain's variance ~ beta dt / 4 ~ 1%; the rest is Monte Carlo)."""
    gen = torch.Generator().manual_seed(1)
    B, steps = 20000, 200
    model = _model()
    x0 = MU0 + A0 * torch.randn(B, 2, generator=gen)
    proc = NDSM(standard_normal_reference(2), SDE, steps)
    n = steps // 2 - 1  # t_{n+1} = 0.5
    t = torch.full((B,), 0.5, dtype=torch.float64)

    def grad(loss: torch.Tensor) -> torch.Tensor:
        model.zero_grad()
        loss.mean().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()]).clone()

    xt = SDE.mean_scale(t).float()[:, None] * x0 + SDE.std(t).float()[:, None] * torch.randn(B, 2, generator=gen)
    g_ref = grad((model(xt, t.float()) - _gauss_score(xt, t)).square().sum(1))
    g_dsm = grad(point_dsm_loss(model, x0, SDE, gen, t=t) / SDE.std(0.5) ** 2)
    g_cv = grad(ndsm_loss(model, x0, proc, gen, control_variate="exact", n=n, weighting="none"))
    g_plain = grad(ndsm_loss(model, x0, proc, gen, control_variate=None, n=n, weighting="none"))
    rel = lambda g: float((g - g_ref).norm() / g_ref.norm())  # noqa: E731
    assert rel(g_dsm) < 0.1 and rel(g_cv) < 0.1 and rel(g_plain) < 0.25, (rel(g_dsm), rel(g_cv), rel(g_plain))


def test_control_variate_variance_reduction():
    """Trace of the per-sample gradient covariance at t = 0.5 for dt = 1e-2 and 1e-3.

    Stated: without the control variate the variance grows like 1/dt (ratio between the two
    dt within [5, 20], i.e. slope -1 +- 0.3 per decade); with it, it stays O(1) (ratio within
    [0.5, 2]); at dt = 1e-3 the control variate reduces it by a factor > 100 (measured ~1000).
    """
    model = _model(2)
    gen = torch.Generator().manual_seed(3)
    x0 = MU0 + A0 * torch.randn(400, 2, generator=gen)
    var = {}
    for steps in (100, 1000):
        proc = NDSM(standard_normal_reference(2), SDE, steps)
        for cv in ("none", "exact"):
            g = torch.Generator().manual_seed(4)
            G = per_sample_gradients(model, lambda s: ndsm_loss(s, x0, proc, g, control_variate=cv, n=steps // 2 - 1, weighting="none"))
            var[steps, cv] = float(G.var(0).sum())
    r_none = var[1000, "none"] / var[100, "none"]
    r_cv = var[1000, "exact"] / var[100, "exact"]
    factor = var[1000, "none"] / var[1000, "exact"]
    assert 5 < r_none < 20 and 0.5 < r_cv < 2 and factor > 100, (r_none, r_cv, factor, var)


@pytest.mark.filterwarnings("ignore:NDSM")  # 600 steps: EM inflates within-mode variance at beta_max; weights are what we test
def test_sampling_from_reference_keeps_structure():
    """With score = grad log pi_ref (data = pi_ref) the reverse chain is stationary: weights
    of an imbalanced mixture survive to within 0.03; with pi_ref = N(0, I) and the exact VP
    score of Gaussian data the samples have its mean/std to within 0.05."""
    gen = torch.Generator().manual_seed(5)
    mix = fit_reference_mixture(imbalanced_mixture(2000, gen), 3, generator=gen)
    proc = NDSM(mix, SDE, steps=600)  # v_min ~ 0.02: stable EM needs steps > 250
    y = ndsm_sample(lambda x, t: mix.score(x), proc, 3000, gen, dtype=torch.float64)
    w = mix.responsibilities(y).argmax(1).bincount(minlength=3).double() / 3000
    assert torch.allclose(w, mix.weights, atol=0.03), (w, mix.weights)
    proc0 = NDSM(standard_normal_reference(2), SDE, steps=200)
    y0 = ndsm_sample(_gauss_score, proc0, 3000, gen)
    assert torch.allclose(y0.mean(0), MU0, atol=0.05) and torch.allclose(y0.std(0), torch.full((2,), A0), atol=0.05)


def test_callable_control_variate():
    """A callable control variate c(mu, t) = s(mu, t) reproduces 'exact' (same noise)."""
    model = _model(3)
    proc = NDSM(standard_normal_reference(2), SDE, steps=50)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(6))
    a = ndsm_loss(model, x0, proc, torch.Generator().manual_seed(7), control_variate="exact")
    b = ndsm_loss(model, x0, proc, torch.Generator().manual_seed(7), control_variate=model)
    torch.testing.assert_close(a, b)


def test_bad_inputs():
    tight = ReferenceMixture(torch.ones(1), torch.zeros(1, 2), torch.full((1,), 0.01))
    with pytest.raises(ValueError, match="too few"):
        NDSM(tight, SDE, steps=100)
    proc = NDSM(standard_normal_reference(2), SDE, steps=50)
    with pytest.raises(ValueError):
        ndsm_loss(_model(), torch.zeros(3, 2), proc, control_variate="bogus")
    with pytest.raises(ValueError):
        ndsm_loss(_model(), torch.zeros(3, 2), proc, n=50)
    with pytest.raises(ValueError):
        fit_reference_mixture(torch.zeros(5, 2), 3, method="gmm")


def test_steps_for_meets_the_rate():
    mix = ReferenceMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64),
                           torch.tensor([0.02, 0.5], dtype=torch.float64))
    sde = fd.VPSDE(fd.White(), beta_min=0.1, beta_max=20.0)
    n = NDSM.steps_for(mix, sde, rate=0.125)
    assert n == math.ceil(20.0 / (2 * 0.02 * 0.125))  # 4000
    rate = lambda k: 20.0 * (1.0 / k) / (2 * 0.02)  # noqa: E731
    assert rate(n) <= 0.125 < rate(n - 1)
    assert NDSM.steps_for(standard_normal_reference(2), sde, min_steps=100) == 100
    with pytest.raises(ValueError, match="rate"):
        NDSM.steps_for(mix, sde, rate=2.5)
