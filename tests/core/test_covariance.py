"""Spectral covariances: sample statistics, nesting, operator algebra, traces, serialisation, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

import fsdiff as fd


def _families(ndim: int) -> dict[str, fd.Covariance]:
    return {
        "matern": fd.Matern(alpha=2.0, tau=3.0, sigma=1.5),
        "laplacian": fd.LaplacianPower(power=2.0, scale=0.5),
        "se": fd.SquaredExponential(lengthscale=0.15, sigma=2.0),
        "white": fd.White(sigma=0.7),
        "random": fd.RandomSpectral(modes=(3, 4, 2)[:ndim], scale=1.0, decay=0.5, seed=3),
        "sum": fd.Matern(2.0, 3.0) + 0.5 * fd.SquaredExponential(0.2),
        "scaled": 2.5 * fd.LaplacianPower(power=1.5),
    }


def _full_box_eigenvalue_sum(C: fd.Covariance, grid: fd.Grid) -> float:
    """``sum lambda_k`` over every kept ``k`` of the full lattice box (not the rfft half), by enumeration."""
    axes = [torch.arange(-K, K + 1) for K in grid.max_modes]
    k = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, grid.ndim)
    return float(C.spectrum(k, grid.length).sum())


# -------------------------------------------------------------------- per-mode variances
@pytest.mark.parametrize("name", list(_families(2)))
def test_per_mode_variance_matches_eigenvalues(name):
    C = _families(2)[name]
    g = fd.Grid((12, 10), length=(1.0, 1.5))
    n = 4000
    u = C.sample(g, n, channels=1, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    assert u.shape == (n, 1, 12, 10) and u.dtype == torch.float64 and torch.isfinite(u).all()
    power = g.rfft(u[:, 0]).abs().square().mean(0)  # estimate of E|u_hat_k|^2
    expect = C.eigenvalues(g) / g.volume  # = lambda_k / |D|
    pos = expect > 0
    ratio = power[pos] / expect[pos]
    # |u_hat_k|^2 / E = chi^2_2 / 2 (variance 1) for complex modes, chi^2_1 (variance 2) for k = 0:
    # the mean of n draws has std <= sqrt(2 / n) = 0.022; 5.5 sigma per mode over <= 130 modes
    # (two-sided false alarm ~ 5e-6).
    assert float((ratio - 1).abs().max()) < 5.5 * math.sqrt(2 / n)
    # modes with lambda = 0 (dropped Nyquist, LaplacianPower's k = 0, RandomSpectral's outside) are exactly empty
    assert float(power[~pos].max()) < 1e-24 * float(expect.max()) + 1e-28
    if name in ("laplacian", "scaled"):
        torch.testing.assert_close(u.mean(dim=(-2, -1)), torch.zeros(n, 1, dtype=torch.float64), atol=1e-13, rtol=0)


@pytest.mark.parametrize("name", ["matern", "laplacian", "se", "random", "sum"])
def test_pointwise_variance_of_samples(name):
    C = _families(2)[name]
    g = fd.Grid((16, 12), length=(1.0, 2.0))
    exact = _full_box_eigenvalue_sum(C, g) / g.volume
    assert C.pointwise_variance(g) == pytest.approx(exact, rel=1e-12)
    n = 2000
    u = C.sample(g, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    est = float(u.square().mean())
    # spatial mean of u^2 = |u_hat_0|^2 + 2 sum_half |u_hat_k|^2, a sum of independent scaled chi^2:
    # variance 2 (lambda_0/|D|)^2 + 4 sum_half (lambda_k/|D|)^2 per sample.
    lam = (C.eigenvalues(g) / g.volume).flatten()
    w = g.rfft_weights.flatten()
    var_one = float((torch.where(w == 1, 2.0, 4.0) * lam.square() * (w > 0)).sum())
    # the rfft half counts the k_d = 0 plane twice; a factor-2 overestimate of the variance is harmless
    assert abs(est - exact) < 5 * math.sqrt(2 * var_one / n)


def test_matern_pointwise_variance_converges_and_white_grows():
    C = fd.Matern(alpha=2.0, tau=3.0)
    v128, v256 = C.pointwise_variance(fd.Grid((128, 128))), C.pointwise_variance(fd.Grid((256, 256)))
    assert abs(v128 / v256 - 1) < 0.01
    assert abs(v256 / C.pointwise_variance_limit(2) - 1) < 0.01
    W = fd.White(sigma=1.0)
    # odd grids keep all N^d modes: sum of eigenvalues = N^d exactly
    for n in (17, 33, 65):
        assert W.pointwise_variance(fd.Grid((n, n))) == pytest.approx(n**2, rel=1e-12)
    # from samples: ||u||^2 = sum over N^2 modes of chi^2 terms; relative std <= sqrt(2 / (n N^2)) < 1%
    norms = []
    for n in (17, 33, 65):
        g = fd.Grid((n, n))
        u = W.sample(g, 20, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        norms.append(float(g.norm(u).square().mean()))
    for (a, na), (b, nb) in zip(zip(norms, (17, 33, 65)), zip(norms[1:], (33, 65))):
        assert b / a == pytest.approx((nb / na) ** 2, rel=0.05)


# --------------------------------------------------------------------------------- nesting
_NEST_CASES = [
    ((128,), (40,)), ((64,), (33,)), ((63,), (20,)), ((200,), (9,)),
    ((64, 64), (32, 32)), ((64, 48), (20, 16)), ((33, 31), (15, 9)), ((40, 41), (40, 12)),
    ((16, 16, 16), (8, 8, 8)), ((12, 10, 14), (7, 5, 9)),
]


@pytest.mark.parametrize("fine,coarse", _NEST_CASES)
@pytest.mark.parametrize("name", ["matern", "laplacian", "se", "random", "sum"])
def test_nested_sampling(fine, coarse, name):
    C = _families(len(fine))[name]
    length = (1.0, 2.0, 0.5)[: len(fine)]
    gf, gc = fd.Grid(fine, length), fd.Grid(coarse, length)
    uf = C.sample(gf, 3, channels=2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    uc = C.sample(gc, 3, channels=2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    scale = float(uc.abs().max())
    assert scale > 0
    torch.testing.assert_close(fd.resample(uf, gf, gc), uc, atol=1e-12 * scale, rtol=0)


def test_nested_sampling_float32_and_generator_state():
    C = fd.Matern(2.0, 3.0)
    gf, gc = fd.Grid((64, 48)), fd.Grid((20, 16))
    gen_f, gen_c = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    uf, uc = C.sample(gf, 4, generator=gen_f), C.sample(gc, 4, generator=gen_c)
    assert uf.dtype == torch.float32
    torch.testing.assert_close(fd.resample(uf, gf, gc), uc, atol=1e-5, rtol=0)
    # nesting needs the same generator *state*: a fine draw consumes more numbers than a coarse one,
    # so the next draws from the two generators are not nested (documented limitation)
    assert not torch.allclose(C.sample(gc, 4, generator=gen_c), uc)
    a = C.sample(gc, 2, generator=torch.Generator().manual_seed(2))
    b = C.sample(gc, 2, generator=torch.Generator().manual_seed(2))
    c = C.sample(gc, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # independent draws within a batch


# ------------------------------------------------------------------------------- operators
@pytest.mark.parametrize("name", ["matern", "laplacian", "se", "random", "sum", "scaled"])
def test_operator_algebra(name):
    C = _families(2)[name]
    g = fd.Grid((15, 12), length=(1.0, 2.0))
    u = torch.randn(2, 1, 15, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lam = C.eigenvalues(g)
    in_range = lam > 1e-12 * float(lam.max())
    proj = g.spectral_multiply(u, in_range.double())  # orthogonal projection onto the range of Q
    # round-off of the FFTs (~1e-16) is amplified by the condition number of Q on its range
    cond = float(lam.max() / lam[in_range].min())
    tol1, tol_half = 1e-14 * cond + 1e-12, 1e-14 * math.sqrt(cond) + 1e-12
    torch.testing.assert_close(C.sqrt(C.sqrt(u, g), g), C.apply(u, g), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(C.inv_sqrt(C.sqrt(u, g), g), proj, atol=tol_half, rtol=0)
    torch.testing.assert_close(C.sqrt(C.inv_sqrt(u, g), g), proj, atol=tol_half, rtol=0)
    torch.testing.assert_close(C.inv(C.apply(u, g), g), proj, atol=tol1, rtol=0)
    # apply is Q: rfft coefficients multiplied by lambda_k
    torch.testing.assert_close(g.rfft(C.apply(u, g)), g.rfft(u) * lam, atol=1e-12, rtol=1e-10)
    # the pseudo-inverse is zero outside the range (up to round-off leaking into in-range modes)
    outside = g.spectral_multiply(u, (g.mode_mask & ~in_range).double())
    if float(outside.abs().max()) > 1e-6:
        inv_max = float(1 / lam[in_range].min())
        assert float(C.inv_sqrt(outside, g).abs().max()) < 1e-14 * math.sqrt(inv_max) + 1e-12
        assert float(C.inv(outside, g).abs().max()) < 1e-14 * inv_max + 1e-12
        # and large compared with that where the range is: the check can fail
        assert float(C.inv(proj, g).abs().max()) > 1e3 * (1e-14 * inv_max + 1e-12)
    if name in ("laplacian", "scaled"):  # zero mode outside the range: inverses ignore the mean
        torch.testing.assert_close(C.inv(torch.ones(1, 1, 15, 12, dtype=torch.float64), g),
                                   torch.zeros(1, 1, 15, 12, dtype=torch.float64))
    if name == "random":
        assert int(in_range.sum()) < int(g.mode_mask.sum())  # finite rank: really has an outside


@pytest.mark.parametrize("name", ["matern", "laplacian", "random", "sum"])
def test_cameron_martin_norm_of_sqrt(name):
    C = _families(2)[name]
    g = fd.Grid((15, 13), length=(1.0, 2.0))  # odd: every grid mode is kept
    u = torch.randn(3, 2, 15, 13, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    lam = C.eigenvalues(g)
    proj = g.spectral_multiply(u, (lam > 1e-12 * float(lam.max())).double())
    cm = C.cameron_martin_norm(C.sqrt(u, g), g)
    assert cm.shape == (3,)
    torch.testing.assert_close(cm, g.norm(proj), rtol=1e-9, atol=0)
    if name == "matern":
        torch.testing.assert_close(cm, g.norm(u), rtol=1e-9, atol=0)


# ---------------------------------------------------------------------------------- traces
def test_trace_closed_forms():
    # LaplacianPower p=1 in 1-D: sum_{k != 0} (2 pi k / L)^-2 = 2 (pi^2/6) L^2 / (4 pi^2) = L^2 / 12
    assert fd.LaplacianPower(power=1.0).trace(1) == pytest.approx(1 / 12, rel=1e-6)
    assert fd.LaplacianPower(power=1.0, scale=3.0).trace(1, 2.0) == pytest.approx(3 * 4 / 12, rel=1e-6)
    # Matern alpha=1 in 1-D: sum_k 1/(tau^2 + 4 pi^2 k^2) = coth(tau/2) / (2 tau)
    tau = 3.0
    assert fd.Matern(alpha=1.0, tau=tau).trace(1) == pytest.approx(1 / math.tanh(tau / 2) / (2 * tau), rel=1e-6)
    # SquaredExponential: Poisson summation, sum_k exp(-2 pi^2 l^2 k^2) = (1 + O(e^{-1/(2 l^2)})) / (sqrt(2 pi) l)
    ell = 0.1
    assert fd.SquaredExponential(ell).trace(2) == pytest.approx(1 / (2 * math.pi * ell**2), rel=1e-8)
    assert fd.SquaredExponential(ell, sigma=2.0).trace(1) == pytest.approx(4 / (math.sqrt(2 * math.pi) * ell), rel=1e-8)
    assert fd.SquaredExponential(ell).trace(2, (2.0, 3.0)) == pytest.approx(6 / (2 * math.pi * ell**2), rel=1e-8)


@pytest.mark.parametrize("name", ["matern", "laplacian", "se", "random", "sum", "scaled"])
def test_trace_matches_large_grid(name):
    C = _families(2)[name]
    g = fd.Grid((255, 255), length=(1.0, 1.5))
    grid_sum = _full_box_eigenvalue_sum(C, g)
    tr = C.trace(2, (1.0, 1.5))
    # tail beyond |k| = 127 (|omega| > R = 2 pi 127): for lambda ~ |omega|^-4 it is ~ |D| / (4 pi R^2) ~ 2e-7
    # (1e-5 relative); for LaplacianPower(1.5), lambda ~ |omega|^-3, it is ~ |D| / (2 pi R) ~ 3e-4 (6e-3 relative)
    rel = 1.5e-2 if name == "scaled" else 1e-4
    assert grid_sum == pytest.approx(tr, rel=rel)
    assert grid_sum <= tr * (1 + 1e-9)  # partial sums of a positive series approach from below
    assert C.pointwise_variance(g) == pytest.approx(grid_sum / g.volume, rel=1e-12)


def test_is_trace_class_table():
    for d in (1, 2, 3):
        assert fd.Matern(alpha=0.6).is_trace_class(d) == (1.2 > d)
        assert fd.Matern(alpha=1.0).is_trace_class(d) == (2.0 > d)
        assert fd.Matern(alpha=2.0).is_trace_class(d)
        assert fd.LaplacianPower(power=1.0).is_trace_class(d) == (d < 2)
        assert fd.LaplacianPower(power=1.6).is_trace_class(d) == (d < 3.2)
        assert not fd.White().is_trace_class(d)
        assert fd.SquaredExponential().is_trace_class(d)
        assert fd.RandomSpectral(modes=(2,) * d).is_trace_class(d)
        assert (fd.Matern(2.0) + fd.White()).is_trace_class(d) is False
        assert (3.0 * fd.Matern(1.0)).is_trace_class(d) == (d == 1)
    assert fd.White().trace(2) == math.inf and fd.Matern(alpha=1.0).trace(2) == math.inf


@pytest.mark.parametrize("length", [1.0, (2.0, 0.5)])
def test_with_pointwise_variance(length):
    C = fd.Matern(alpha=2.0, tau=3.0).with_pointwise_variance(0.7, 2, length)
    assert C.pointwise_variance_limit(2, length) == pytest.approx(0.7, rel=1e-8)
    g = fd.Grid((255, 255), length)
    assert C.pointwise_variance(g) == pytest.approx(0.7, rel=1e-3)
    u = C.sample(fd.Grid((64, 64), length), 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # 200 fields of 64^2 correlated points: loose 10% check that the scale is right
    assert float(u.square().mean()) == pytest.approx(0.7, rel=0.1)
    with pytest.raises(ValueError, match="trace class"):
        fd.White().with_pointwise_variance(1.0, 2)
    with pytest.raises(ValueError):
        fd.Matern().with_pointwise_variance(-1.0, 2)


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("name", list(_families(2)))
def test_dict_round_trip(name):
    C = _families(2)[name]
    spec = json.loads(json.dumps(C.to_dict()))  # plain data only
    C2 = fd.covariance_from_dict(spec)
    assert type(C2) is type(C) and C2.to_dict() == C.to_dict()
    g = fd.Grid((16, 12), (1.0, 2.0))
    torch.testing.assert_close(C2.eigenvalues(g), C.eigenvalues(g), rtol=0, atol=0)
    assert isinstance(repr(C2), str)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make",
    [lambda: fd.Matern(alpha=-1.0), lambda: fd.Matern(tau=-3.0), lambda: fd.Matern(sigma=0.0),
     lambda: fd.Matern(alpha=math.nan), lambda: fd.Matern(tau=math.inf), lambda: fd.LaplacianPower(power=0.0),
     lambda: fd.LaplacianPower(scale=math.nan), lambda: fd.SquaredExponential(lengthscale=-0.1),
     lambda: fd.White(sigma=-1.0), lambda: fd.RandomSpectral(modes=(-1, 2)), lambda: fd.RandomSpectral(scale=0.0),
     lambda: 0.0 * fd.Matern(), lambda: -2.0 * fd.Matern(), lambda: math.nan * fd.Matern(),
     lambda: fd.SumCovariance()],
)
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    "spec",
    [{"type": "bessel"}, {"alpha": 2.0}, "matern", {"type": "matern", "nu": 1.5}, {"type": "matern", "alpha": "x"},
     {"type": "matern", "alpha": -2.0}],
)
def test_covariance_from_dict_bad(spec):
    with pytest.raises(ValueError):
        fd.covariance_from_dict(spec)


def test_type_errors_and_sampling_errors():
    with pytest.raises(TypeError):
        fd.SumCovariance(fd.Matern(), 3.0)
    with pytest.raises(TypeError):
        fd.ScaledCovariance("matern", 2.0)
    with pytest.raises(ValueError):
        fd.Matern().sample(fd.Grid(8), 0)
    with pytest.raises(ValueError):
        fd.Matern().sample(fd.Grid(8), 2, channels=0)
    with pytest.raises(ValueError, match="2-D"):
        fd.RandomSpectral(modes=(3, 3)).eigenvalues(fd.Grid((8, 8, 8)))


def test_white_noise_rejected_where_trace_class_is_required():
    sde = fd.VPSDE(fd.White())
    g = fd.Grid((16, 16))
    x0 = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match="not trace class"):
        sde.perturb(x0, 0.5, g, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="not trace class"):
        sde.prior_sample(g, 2)
    with pytest.raises(ValueError, match="not trace class"):
        fd.White().require_trace_class(1)
    assert fd.Matern().require_trace_class(3) is not None


def test_sampling_follows_changed_parameters():
    # the draw scale is cached per (parameters, grid): a mutated parameter must not reuse a stale one
    C, g = fd.Matern(alpha=2.0, tau=3.0), fd.Grid(16)
    a = C.sample(g, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    C.tau = 5.0
    b = C.sample(g, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = fd.Matern(alpha=2.0, tau=5.0).sample(g, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(b, c) and not torch.allclose(a, b)
