"""Samplers against exact oracles: per-mode moments at two resolutions, mixture weights,
reproducibility, chunking, trajectories, coarse-to-fine, errors.

Statistics: a complex Fourier coefficient's sample variance from n draws has relative
standard error 1/sqrt(n) (2n real degrees of freedom); per-mode checks use 4.5 SE (with
<= 64 modes a false alarm has probability < 1e-3) plus a stated time-discretisation bias
(measured with n = 4000 / the exact EM chain law; see the constants below).
"""

import math

import pytest
import torch

import fsdiff as fd
from fsdiff.oracles import GaussianMixtureScore, GaussianScore
from fsdiff.sampling import sample, sample_coarse_to_fine
from fsdiff.sampling import time_steps

Q = fd.Matern(alpha=2.0, tau=3.0)
C = fd.Matern(alpha=2.5, tau=5.0, sigma=4.0)
SDE = fd.VPSDE(Q)
EPS = 1e-3
FINE, COARSE = fd.Grid(128), fd.Grid(32)
N_MC = 2000
K_LOW = 16  # modes shared by both resolutions that the bias statements cover
# time-discretisation bias allowances on |k| <= K_LOW (relative variance error vs the exact
# continuous law incl. the final Tweedie step); measured values in the comments
# (measured with n = 3000: EM chain law exactly; pc at 32 / 128 points: 0.235 / 0.072 -- the
# corrector's harmonic-mean step is larger on coarse grids, see fsdiff.sampling; ode and
# ode_adaptive: within MC error, < 0.05)
BIAS = {"em": 0.06, "pc": {32: 0.25, 128: 0.09}, "ode": 0.04, "ode_adaptive": 0.04}
STEPS = {"em": 50, "pc": 50, "ode": 50, "ode_adaptive": 1}


def mean_fn(grid):
    x = grid.mesh()[0]
    return 0.5 * torch.sin(2 * math.pi * x) + 0.2 * torch.cos(6 * math.pi * x)


ORACLE = GaussianScore(SDE, C, mean=mean_fn)


pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def mode_stats(x, grid):
    """Per-mode mean coefficients and variances (eigenvalue units) of samples (n, 1, N)."""
    xh = grid.rfft(x.double())[:, 0]
    mean = xh.mean(0)
    var = (xh - mean).abs().square().sum(0) / (xh.shape[0] - 1) * grid.volume  # unbiased
    return mean, var


def target_law(grid):
    """Exact law of X_eps followed by Tweedie: mean mu, variance m² c² / v_eps per mode."""
    c = C.eigenvalues(grid)
    m = float(SDE.mean_scale(EPS))
    return grid.rfft(mean_fn(grid)), m * m * c * c / ORACLE.marginal_eigenvalues(EPS, grid)


def check_moments(x, grid, target_mean, target_var, bias, kmax):
    """Raise AssertionError unless modes 1..kmax match within 4.5 SE + bias."""
    n = x.shape[0]
    mean, var = mode_stats(x, grid)
    k = slice(1, kmax + 1)
    rel = var[k] / target_var[k] - 1
    assert rel.abs().max() < 4.5 / math.sqrt(n) + bias, f"variance rel. errors {rel.numpy().round(3)}"
    se_mean = (target_var[k] / (n * grid.volume)).sqrt()
    err = (mean[k] - target_mean[k]).abs()
    assert (err < 4.5 * se_mean + bias * target_mean[k].abs()).all(), f"mean errors {err.numpy()} vs SE {se_mean.numpy()}"
    return rel


@pytest.fixture(scope="module")
def em_fine():
    x, info = sample(ORACLE, SDE, FINE, N_MC, sampler="em", steps=STEPS["em"], time_grid="quadratic",
                     generator=gen(0), dtype=torch.float64, return_info=True)
    return x, info


def test_em_matches_exact_chain_law_and_continuum(em_fine):
    x, info = em_fine
    assert info["nfe"] == STEPS["em"] + 1
    M, V = ORACLE.em_chain_moments(info["times"], FINE, denoise=True)
    # all 63 modes against the exact law of the discrete chain: Monte Carlo error only
    check_moments(x, FINE, M[0], V, bias=0.0, kmax=63)
    # the chain's own bias against the continuum law (deterministic, measured 4.6%)
    mu, var = target_law(FINE)
    assert float((V[1:K_LOW + 1] / var[1:K_LOW + 1] - 1).abs().max()) < BIAS["em"]


def test_moment_check_can_fail(em_fine):
    """A 30% wrong data covariance is detected by the same check."""
    wrong = GaussianScore(SDE, C * 1.3, mean=mean_fn)
    x = sample(wrong, SDE, COARSE, N_MC, sampler="em", steps=STEPS["em"], time_grid="quadratic",
               generator=gen(0), dtype=torch.float64)
    M, V = ORACLE.em_chain_moments(em_fine[1]["times"], COARSE, denoise=True)
    check_moments(fd.resample(em_fine[0], FINE, COARSE), COARSE, M[0], V, bias=0.0, kmax=15)  # control
    with pytest.raises(AssertionError):
        check_moments(x, COARSE, M[0], V, bias=0.0, kmax=15)


@pytest.mark.parametrize("sampler", ["em", "ode"])
def test_fixed_step_samplers_are_nested_across_resolutions(sampler, em_fine):
    """With the exact oracle and the same seed, the coarse run is the restriction of the fine run."""
    kw = dict(sampler=sampler, steps=STEPS[sampler], time_grid="quadratic", dtype=torch.float64)
    xc = sample(ORACLE, SDE, COARSE, N_MC if sampler == "em" else 64, generator=gen(0), **kw)
    xf = em_fine[0] if sampler == "em" else sample(ORACLE, SDE, FINE, 64, generator=gen(0), **kw)
    torch.testing.assert_close(fd.resample(xf, FINE, COARSE), xc, rtol=1e-9, atol=1e-10)
    # so the coarse errors on shared modes equal the fine ones: no growth with resolution
    mu, var = target_law(COARSE)
    if sampler == "em":
        check_moments(xc, COARSE, mu, var, BIAS[sampler], kmax=K_LOW - 1)


def test_nesting_in_2d():
    f, c = fd.Grid((24, 24)), fd.Grid((12, 12))
    kw = dict(sampler="em", steps=20, dtype=torch.float64)
    xf = sample(ORACLE, SDE, f, 4, generator=gen(3), **kw)
    xc = sample(ORACLE, SDE, c, 4, generator=gen(3), **kw)
    torch.testing.assert_close(fd.resample(xf, f, c), xc, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("sampler", ["pc", "ode", "ode_adaptive"])
def test_samplers_reproduce_gaussian_moments(sampler):
    """Mean and per-mode variances on |k| <= 15 at 32 and 128 points, same steps (MC + bias)."""
    n = N_MC if sampler != "ode_adaptive" else 1000
    rels = []
    for grid in ((COARSE, FINE) if sampler != "ode" else (FINE,)):  # "ode" coarse: nesting test
        x, info = sample(ORACLE, SDE, grid, n, sampler=sampler, steps=STEPS[sampler], time_grid="quadratic",
                         generator=gen(1), dtype=torch.float64, return_info=True, rtol=1e-5, atol=1e-6)
        mu, var = target_law(grid)
        bias = BIAS[sampler][grid.shape[0]] if sampler == "pc" else BIAS[sampler]
        rels.append(check_moments(x, grid, mu, var, bias, kmax=K_LOW - 1))
        if sampler == "ode_adaptive":
            assert 10 < info["nfe"] < 400
    if len(rels) == 2:  # errors on shared modes do not grow with resolution
        assert rels[1].abs().mean() < rels[0].abs().mean() + 3 / math.sqrt(n)


def test_mixture_weights_are_reproduced():
    g = fd.Grid(64)
    x = g.mesh()[0]
    means = 0.6 * torch.stack([torch.sin(2 * math.pi * x), -torch.sin(2 * math.pi * x), torch.cos(4 * math.pi * x)])[:, None]
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    mix = GaussianMixtureScore(SDE, means, g, w, fd.Matern(2.5, 5.0, sigma=2.0))
    n = 800
    xs = sample(mix, SDE, g, n, sampler="em", steps=40, time_grid="quadratic", generator=gen(2), dtype=torch.float64)
    frac = torch.bincount(mix.classify(xs, g), minlength=3).double() / n
    se = (w * (1 - w) / n).sqrt()
    assert ((frac - w).abs() < 4.5 * se).all(), (frac, w)


def test_reproducible_and_chunking_is_exact():
    g = fd.Grid(32)
    for sampler in ("em", "pc", "ode", "ode_adaptive"):
        kw = dict(sampler=sampler, steps=8, dtype=torch.float32)
        a = sample(ORACLE, SDE, g, 10, generator=gen(5), **kw)
        b = sample(ORACLE, SDE, g, 10, generator=gen(5), chunk_size=3, **kw)
        c = sample(ORACLE, SDE, g, 10, generator=gen(6), **kw)
        assert torch.equal(a, b), sampler
        assert not torch.equal(a, c), sampler


def test_x_init_trajectory_and_time_grids():
    g = fd.Grid(32)
    kw = dict(sampler="em", steps=10, dtype=torch.float64)
    x, info = sample(ORACLE, SDE, g, 6, generator=gen(7), return_trajectory_at=[1.0, 0.5, 0.0], return_info=True, **kw)
    traj = info["trajectory"]
    assert set(traj) == {1.0, 0.5, 0.0} and traj[0.5].shape == (6, 1, 32)
    # giving the prior draw as x_init reproduces the run (step noise unchanged)
    x2 = sample(ORACLE, SDE, g, 6, generator=gen(7), x_init=traj[1.0], **kw)
    assert torch.equal(x, x2)
    explicit = sample(ORACLE, SDE, g, 6, generator=gen(7), sampler="em", time_grid=time_steps(SDE, 10, EPS, "uniform"), dtype=torch.float64)
    assert torch.equal(x, explicit)
    for kind in ("uniform", "quadratic", "edm"):
        t = time_steps(SDE, 20, EPS, kind)
        assert t.shape == (21,) and t[0] == 1.0 and t[-1] == EPS and (t[1:] < t[:-1]).all()
    sig = SDE.std(time_steps(SDE, 20, EPS, "edm")) / SDE.mean_scale(time_steps(SDE, 20, EPS, "edm"))
    r = sig ** (1 / 7)
    torch.testing.assert_close(r[1:] - r[:-1], torch.full((20,), float(r[1] - r[0]), dtype=torch.float64))


def test_coarse_to_fine_matches_single_level(em_fine):
    x_single, info = em_fine
    x, cinfo = sample_coarse_to_fine(ORACLE, SDE, [COARSE, FINE], [0.3], N_MC, sampler="em", steps=STEPS["em"],
                                     time_grid="quadratic", generator=gen(0), dtype=torch.float64,
                                     data_covariance=C, data_mean=ORACLE.mean_on, return_info=True)
    assert cinfo["nfe"] == info["nfe"]
    # coarse modes: the same random path as the single-level run
    torch.testing.assert_close(fd.resample(x, FINE, COARSE), fd.resample(x_single, FINE, COARSE), rtol=1e-9, atol=1e-10)
    # new modes 16..63: same law as single level (EM chain law; bias: injected exact marginal
    # instead of the chain's marginal at the switch, measured < 1%)
    M, V = ORACLE.em_chain_moments(info["times"], FINE, denoise=True)
    _, var = mode_stats(x, FINE)
    rel = var[16:64] / V[16:64] - 1
    assert rel.abs().max() < 4.5 / math.sqrt(N_MC) + 0.02, rel


def test_errors():
    g = fd.Grid(16)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(ORACLE, SDE, g, 2, sampler="heun")
    with pytest.raises(ValueError, match="steps"):
        sample(ORACLE, SDE, g, 2, steps=0)
    for eps in (0.0, 1.0, -1e-3):
        with pytest.raises(ValueError, match="eps"):
            sample(ORACLE, SDE, g, 2, eps=eps)
    with pytest.raises(ValueError, match="time grid"):
        sample(ORACLE, SDE, g, 2, time_grid="cosine")
    with pytest.raises(ValueError, match="trace class"):
        sample(ORACLE, fd.VPSDE(fd.White()), g, 2)
    with pytest.raises(ValueError, match="2-D"):
        sample(ORACLE, fd.VPSDE(fd.RandomSpectral(modes=(4, 4))), g, 2)
    with pytest.raises(ValueError, match="x_init"):
        sample(ORACLE, SDE, g, 2, x_init=torch.zeros(3, 1, 16))
    with pytest.raises(ValueError, match="same shape"):
        sample(lambda x, t, grid: x[:, :, :4], SDE, g, 2, steps=2)
    with pytest.raises(FloatingPointError):
        sample(lambda x, t, grid: x * float("nan"), SDE, g, 2, steps=2)
    with pytest.raises(ValueError, match="switch"):
        sample_coarse_to_fine(ORACLE, SDE, [fd.Grid(8), g], [1.5], 2)
    with pytest.raises(ValueError, match="finer"):
        sample_coarse_to_fine(ORACLE, SDE, [g, fd.Grid(8)], [0.5], 2)
    with pytest.raises(ValueError, match="switch times"):
        sample_coarse_to_fine(ORACLE, SDE, [fd.Grid(8), g], [0.5, 0.2], 2)


def test_coarse_to_fine_other_samplers_and_adaptive_trajectory():
    g1, g2 = fd.Grid(16), fd.Grid(64)
    for sampler in ("ode", "pc", "ode_adaptive"):
        x, info = sample_coarse_to_fine(ORACLE, SDE, [g1, g2], [0.4], 6, sampler=sampler, steps=12, generator=gen(8),
                                        dtype=torch.float64, return_info=True, progress=True)
        assert x.shape == (6, 1, 64) and torch.isfinite(x).all()
        assert len(info["nfe_per_level"]) == 2
        if sampler == "ode":  # deterministic and mode-diagonal: coarse modes follow the single-level path
            xs = sample(ORACLE, SDE, g2, 6, sampler="ode", steps=12, generator=gen(8), dtype=torch.float64)
            torch.testing.assert_close(fd.resample(x, g2, g1), fd.resample(xs, g2, g1), rtol=1e-9, atol=1e-10)
    x, info = sample(ORACLE, SDE, g1, 3, sampler="ode_adaptive", generator=gen(9), dtype=torch.float64,
                     return_trajectory_at=[1.0, 0.5, 1e-4], denoise=False, return_info=True)
    traj = info["trajectory"]
    assert set(traj) == {1.0, 0.5, 1e-4}
    assert torch.equal(traj[1e-4], x)
