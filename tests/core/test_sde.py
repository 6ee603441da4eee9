"""VP / VE SDEs: schedules, closed-form marginals vs Monte Carlo and Euler–Maruyama, drifts, serialisation."""

from __future__ import annotations

import json
import math

import pytest
import scipy.integrate
import torch

import fsdiff as fd

Q = fd.Matern(alpha=1.5, tau=2.0)


def _sdes() -> dict[str, fd.SDE]:
    return {
        "vp_linear": fd.VPSDE(Q, beta_min=0.1, beta_max=20.0),
        "vp_cosine": fd.VPSDE(Q, beta_min=0.1, beta_max=20.0, schedule="cosine"),
        "ve": fd.VESDE(Q, sigma_min=0.01, sigma_max=10.0),
    }


def _mode_power(u: torch.Tensor, g: fd.Grid) -> torch.Tensor:
    """Mean over the batch of ``|u_hat_k|^2``: ``(n, 1, N) -> (N//2+1,)``."""
    return g.rfft(u[:, 0]).abs().square().mean(0)


# ------------------------------------------------------------------------------ schedules
@pytest.mark.parametrize("name", list(_sdes()))
def test_endpoints_and_variance_preservation(name):
    sde = _sdes()[name]
    assert float(sde.mean_scale(0.0)) == pytest.approx(1.0, abs=1e-12)
    assert float(sde.std(0.0)) == pytest.approx(0.0, abs=1e-12)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    m, s = sde.mean_scale(t), sde.std(t)
    assert m.shape == s.shape == (101,) and torch.isfinite(m).all() and torch.isfinite(s).all()
    assert (s[1:] > s[:-1]).all()  # noise grows monotonically
    if name.startswith("vp"):
        torch.testing.assert_close(m**2 + s**2, torch.ones_like(t), atol=1e-12, rtol=0)
        assert float(m[-1]) < 0.01  # ends close to the prior
    else:
        torch.testing.assert_close(m, torch.ones_like(t))
        assert float(s[-1]) == pytest.approx(math.sqrt(10.0**2 - 0.01**2), rel=1e-12)


def test_linear_and_cosine_end_equally_close_to_prior():
    a, b = _sdes()["vp_linear"], _sdes()["vp_cosine"]
    assert float(a.mean_scale(1.0)) == pytest.approx(float(b.mean_scale(1.0)), rel=1e-10)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_integrated_beta_matches_quadrature(schedule):
    sde = fd.VPSDE(Q, beta_min=0.1, beta_max=20.0, schedule=schedule)
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        ref, _ = scipy.integrate.quad(lambda r: float(sde.beta(r)), 0.0, t, epsabs=1e-13, epsrel=1e-12)
        assert float(sde.integrated_beta(t)) == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_beta_is_log_derivative_of_mean_scale(schedule):
    sde = fd.VPSDE(Q, beta_min=0.1, beta_max=20.0, schedule=schedule)
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    h = 1e-5
    fd_beta = -2 * (torch.log(sde.mean_scale(t + h)) - torch.log(sde.mean_scale(t - h))) / (2 * h)
    # central differences: error ~ h^2 |d^3 log m / dt^3| ~ 1e-10 * O(100)
    torch.testing.assert_close(fd_beta, sde.beta(t), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sde.diffusion_sq(t), sde.beta(t))
    torch.testing.assert_close(sde.drift_coeff(t), -0.5 * sde.beta(t))


def test_ve_diffusion_is_derivative_of_variance():
    sde = _sdes()["ve"]
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    h = 1e-6
    dvar = (sde.std(t + h) ** 2 - sde.std(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(dvar, sde.diffusion_sq(t), rtol=1e-6, atol=0)
    assert float(sde.drift_coeff(0.3)) == 0.0


# ------------------------------------------------------------------- perturb: Monte Carlo
@pytest.mark.parametrize("name", list(_sdes()))
def test_perturb_matches_marginal_per_mode(name):
    sde = _sdes()[name]
    g = fd.Grid(32, length=2.0)
    n, t = 4000, 0.35
    x = g.coords[0].to(torch.float32)
    x0 = (torch.sin(2 * math.pi * x / 2.0) + 0.3 * torch.cos(6 * math.pi * x / 2.0)).expand(n, 1, 32).clone()
    xt, eta = sde.perturb(x0, t, g, generator=torch.Generator().manual_seed(0))
    assert xt.shape == eta.shape == x0.shape and xt.dtype == torch.float32
    m, s = float(sde.mean_scale(t)), float(sde.std(t))
    torch.testing.assert_close(xt, m * x0 + s * eta, atol=1e-6, rtol=0)
    lam = Q.eigenvalues(g) / g.volume
    # mean: per-point std of the batch mean is s sqrt(pointwise variance / n)
    pv = Q.pointwise_variance(g)
    assert float((xt.mean(0) - m * x0[0]).abs().max()) < 5 * s * math.sqrt(pv / n)
    # covariance: |u_hat_k|^2 of x_t - m x0 has mean s^2 lambda_k/|D|; relative MC std <= sqrt(2/n) = 0.022
    ratio = _mode_power(xt - m * x0, g)[lam > 0] / (s**2 * lam[lam > 0])
    assert float((ratio - 1).abs().max()) < 5 * math.sqrt(2 / n)


def test_perturb_per_sample_times_and_nesting():
    sde = _sdes()["vp_linear"]
    gf, gc = fd.Grid((32, 24)), fd.Grid((15, 12))
    t = torch.tensor([0.1, 0.5, 0.9])
    x0 = torch.zeros(3, 2, 32, 24, dtype=torch.float64)
    xt, eta = sde.perturb(x0, t, gf, generator=torch.Generator().manual_seed(3))
    for i in range(3):
        torch.testing.assert_close(xt[i], float(sde.std(float(t[i]))) * eta[i])
    # noise of the same seed at a coarser grid is the restriction of the fine noise
    _, eta_c = sde.perturb(x0[..., :15, :12].clone(), t, gc, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(fd.resample(eta, gf, gc), eta_c, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="time has shape"):
        sde.perturb(x0, torch.tensor([0.1, 0.2]), gf)
    with pytest.raises(ValueError):
        sde.perturb(torch.zeros(3, 2, 32, 25), 0.5, gf)


def test_prior_sample_scale():
    sde = _sdes()["ve"]
    g = fd.Grid(16)
    a = sde.prior_sample(g, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = Q.sample(g, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(a, float(sde.std(1.0)) * b)


# ---------------------------------------------------------- Euler–Maruyama vs closed form
@pytest.mark.parametrize("name", list(_sdes()))
def test_euler_maruyama_matches_marginal_variance(name, single_thread):
    """Simulate dX = a X dt + g dW^Q from X_0 = 0 with Q-Wiener increments sqrt(dt) * Q.sample."""
    sde = _sdes()[name]
    g = fd.Grid(64)  # 1-D draws come in blocks of 32 shells: 64 points cost what 16 would
    n, steps, T = 1000, 200, 0.6
    dt = T / steps
    gen = torch.Generator().manual_seed(5)
    x = torch.zeros(n, 1, 64, dtype=torch.float64)
    lam = (Q.eigenvalues(g) / g.volume)
    v_em = 0.0  # exact variance (per unit lambda) of the discrete EM recursion: isolates the time-step bias
    checks = {50: None, 120: None, 200: None}
    for i in range(steps):
        ti = i * dt
        a, g2 = float(sde.drift_coeff(ti)), float(sde.diffusion_sq(ti))
        dw = math.sqrt(dt) * Q.sample(g, n, generator=gen).double()
        x = x + a * x * dt + math.sqrt(g2) * dw
        v_em = (1 + a * dt) ** 2 * v_em + g2 * dt
        if i + 1 in checks:
            t = (i + 1) * dt
            v_exact = float(sde.std(t)) ** 2
            ratio = _mode_power(x, g)[lam > 0] / (v_exact * lam[lam > 0])
            bias = abs(v_em / v_exact - 1)  # EM bias, O(beta dt) ~ 2e-2 at the late, stiff times
            # MC: 31 complex modes (std 1/sqrt(n) each) + the real k = 0 (std sqrt(2/n)); the mean over
            # the 32 ratios has std ~ sqrt(1.03 / (32 n)) ~ 0.0057; each single mode <= sqrt(2/n) = 0.045
            assert abs(float(ratio.mean()) - 1) < bias + 4 * math.sqrt(1.03 / (32 * n)), (t, float(ratio.mean()), bias)
            assert float((ratio - 1).abs().max()) < bias + 5 * math.sqrt(2 / n)
            checks[i + 1] = bias
    assert max(checks.values()) < 0.05  # the stated bias bound is small, so the check has teeth


# ------------------------------------------------------------------ drifts, Gaussian score
@pytest.mark.parametrize("name", list(_sdes()))
@pytest.mark.parametrize("c", [1.0, 2.0, 0.3])
def test_drifts_with_exact_gaussian_score(name, c):
    """Data ~ N(0, c Q): p_t = N(0, v(t) Q) with v = m^2 c + s^2, so Q grad log p_t(x) = -x / v."""
    sde = _sdes()[name]
    g = fd.Grid((12, 10))
    x = Q.sample(g, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t in (0.1, 0.4, 0.8):
        m, s = float(sde.mean_scale(t)), float(sde.std(t))
        v = m * m * c + s * s
        qscore = -x / v
        if isinstance(sde, fd.VPSDE):
            beta = float(sde.beta(t))
            a, g2 = -0.5 * beta, beta
        else:
            a, g2 = 0.0, 2 * math.log(1000.0) * (0.01 * 1000.0**t) ** 2
        # hand formulas: reverse a x - g^2 qscore = (a + g^2 / v) x ; ODE (a + g^2 / (2 v)) x
        torch.testing.assert_close(sde.drift(x, t), a * x)
        torch.testing.assert_close(sde.reverse_drift(x, t, qscore), (a + g2 / v) * x, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(sde.ode_drift(x, t, qscore), (a + 0.5 * g2 / v) * x, rtol=1e-10, atol=1e-13)
        # the ODE transports N(0, v Q) to N(0, v(t+dt) Q): dv/dt = 2 v * (ODE coefficient)
        h = 1e-6
        vp = float(sde.mean_scale(t + h)) ** 2 * c + float(sde.std(t + h)) ** 2
        vm = float(sde.mean_scale(t - h)) ** 2 * c + float(sde.std(t - h)) ** 2
        # (for VP with c = 1 both sides vanish: v = 1 for all t; absolute tolerance from the FD round-off)
        assert (vp - vm) / (2 * h) == pytest.approx(2 * v * (a + 0.5 * g2 / v), rel=1e-6, abs=1e-8 * (1 + g2))
    if name.startswith("vp") and c == 1.0:  # N(0, Q) is stationary for the VP SDE: ODE drift vanishes
        torch.testing.assert_close(sde.ode_drift(x, 0.5, -x), torch.zeros_like(x), atol=1e-12, rtol=0)


def test_drifts_per_sample_time():
    sde = _sdes()["vp_linear"]
    x = torch.ones(2, 1, 8, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    out = sde.reverse_drift(x, t, -x)
    for i in range(2):
        torch.testing.assert_close(out[i], sde.reverse_drift(x[i : i + 1], float(t[i]), -x[i : i + 1])[0])
    assert not torch.allclose(out[0], out[1])


# ------------------------------------------------------------------- serialisation, errors
@pytest.mark.parametrize("name", list(_sdes()))
def test_sde_dict_round_trip(name):
    sde = _sdes()[name]
    d = json.loads(json.dumps(sde.to_dict()))
    sde2 = fd.sde_from_dict(d)
    assert type(sde2) is type(sde) and sde2.to_dict() == sde.to_dict()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(sde2.std(t), sde.std(t), rtol=0, atol=0)
    torch.testing.assert_close(sde2.mean_scale(t), sde.mean_scale(t), rtol=0, atol=0)
    assert isinstance(repr(sde2), str)


@pytest.mark.parametrize(
    "make",
    [lambda: fd.VPSDE(Q, beta_min=-0.1), lambda: fd.VPSDE(Q, beta_min=5.0, beta_max=5.0),
     lambda: fd.VPSDE(Q, beta_max=math.nan), lambda: fd.VPSDE(Q, beta_max=math.inf), lambda: fd.VPSDE(Q, schedule="sigmoid"),
     lambda: fd.VESDE(Q, sigma_min=0.0), lambda: fd.VESDE(Q, sigma_min=10.0, sigma_max=1.0),
     lambda: fd.VESDE(Q, sigma_max=math.nan),
     lambda: fd.sde_from_dict({"type": "sub-vp", "covariance": Q.to_dict()}),
     lambda: fd.sde_from_dict({"type": "vp"}),
     lambda: fd.sde_from_dict({"type": "vp", "covariance": Q.to_dict(), "beta": 3.0}),
     lambda: fd.sde_from_dict({"type": "ve", "covariance": {"type": "nope"}})],
)
def test_bad_sde_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_sde_needs_a_covariance_object():
    with pytest.raises(TypeError):
        fd.VPSDE("matern")


def test_covariance_none_is_a_schedule_for_points():
    from fsdiff.points import perturb_points, sample_points

    sde = fd.VPSDE(None, beta_min=0.1, beta_max=20.0)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    torch.testing.assert_close(sde.mean_scale(t), fd.VPSDE(fd.White()).mean_scale(t))
    x, z = perturb_points(torch.zeros(2, 3), t.float(), sde, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, sde.std(t).float()[:, None] * z)
    y = sample_points(lambda x, t: -x, sde, 4, 3, steps=5, generator=torch.Generator().manual_seed(0))
    assert y.shape == (4, 3) and torch.isfinite(y).all()
    assert fd.sde_from_dict(sde.to_dict()).to_dict() == sde.to_dict()
    with pytest.raises(ValueError, match="no covariance"):
        sde.perturb(torch.zeros(1, 1, 8), 0.5, fd.Grid(8))
    with pytest.raises(ValueError, match="no covariance"):
        sde.prior_sample(fd.Grid(8), 1)
    with pytest.raises(TypeError, match="Covariance"):
        fd.VPSDE("white")
