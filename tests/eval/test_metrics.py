"""Tests of fsdiff.eval.metrics: known values, Monte-Carlo checks with stated tolerances, and
agreement of metrics of the same (nested) functions at two resolutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from fsdiff.covariance import Matern
from fsdiff.grid import Grid, resample, subsample
from fsdiff.eval.metrics import (
    MEMORIZATION_THRESHOLD,
    energy_mmd,
    fourier_features,
    fourier_frechet_distance,
    frechet_distance,
    gaussian_frechet,
    gaussian_sliced_wasserstein,
    memorization,
    pairwise_l2,
    pointwise_value_distance,
    project,
    radial_spectrum,
    random_directions,
    shell_average,
    sliced_wasserstein,
    spectrum_error,
    vendi_score,
    wasserstein_1d,
)

G32, G64 = Grid((32, 32)), Grid((64, 64))
COV = Matern(2.0, 3.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(grid: Grid, n: int, seed: int) -> torch.Tensor:
    return COV.sample(grid, n, generator=gen(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- spectra
def test_spectrum_matches_shell_averaged_eigenvalues():
    n = 200
    x = draw(G32, n, 0)
    om, p = radial_spectrum(x, G32)
    om_l, lam = shell_average(COV.eigenvalues(G32), G32)
    assert torch.equal(om, om_l) and len(om) == 16  # complete shells |k| <= 15 on a 32-grid
    assert torch.allclose(om, 2 * math.pi * torch.arange(16, dtype=torch.float64))
    # lattice points per shell: |power_j / lambda_j - 1| has MC sd sqrt(2 / (n * count_j))
    k = np.arange(-15, 16)
    r = np.rint(np.hypot(*np.meshgrid(k, k))).astype(int)
    counts = np.bincount(r.ravel())[:16]
    sd = np.sqrt(2.0 / (n * counts))
    z = ((p / lam).numpy() - 1.0) / sd
    assert np.all(np.abs(z) < 4.5), z
    assert abs(z.mean()) < 4.5 / math.sqrt(len(z))  # no common bias


def test_spectrum_resolution_independent_and_parseval():
    x32, x64 = draw(G32, 20, 1), draw(G64, 20, 1)  # nested: same functions, more modes at 64
    _, p32 = radial_spectrum(x32, G32)
    _, p64 = radial_spectrum(x64, G64, n_bins=len(p32))
    assert torch.allclose(p32, p64, rtol=1e-10, atol=0)
    assert spectrum_error(x32, x64, G32, grid_y=G64) < 1e-10
    # Parseval: summing the per-mode power (shell average * lattice count) over all kept modes = E||u||²
    coeff = G64.rfft(x64)
    per_mode = (coeff.abs().square().mean((0, 1)) * G64.volume * G64.rfft_weights * G64.mode_mask).sum()
    assert torch.allclose(per_mode, G64.norm(x64).square().mean(), rtol=1e-10)


def test_spectrum_error_detects_rescaling():
    x = draw(G32, 10, 2)
    assert spectrum_error(x, x, G32) == 0.0
    assert spectrum_error(x, 2 * x, G32) == pytest.approx(math.log(4), rel=1e-12)
    with pytest.raises(ValueError, match="shells"):
        shell_average(COV.eigenvalues(G32), G32, n_bins=40)


# --------------------------------------------------------------------------- energy distance
def test_pairwise_l2_is_quadrature_norm():
    x, y = draw(G32, 3, 3), draw(G32, 4, 4)
    d = pairwise_l2(x, y, G32)
    ref = G32.norm(x[:, None] - y[None, :])
    assert torch.allclose(d, ref, rtol=1e-10)


def test_energy_mmd_null_is_zero_within_mc_error():
    # U-statistic: expectation exactly 0 under P = Q; check the mean of R replicates
    vals = [energy_mmd(draw(G32, 60, 10 + r), draw(G32, 60, 100 + r), G32) for r in range(12)]
    mean, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
    assert abs(mean) < 4 * sd / math.sqrt(len(vals))
    shifted = energy_mmd(draw(G32, 60, 10), draw(G32, 60, 100) + 0.3, G32)
    assert shifted > 20 * sd
    v = energy_mmd(draw(G32, 60, 10), draw(G32, 60, 100), G32, unbiased=False)
    assert v > 0  # V-statistic is non-negative (biased upwards)


def _energy_1d_exact(delta: float) -> float:
    """Energy distance between N(0,1) and N(delta,1): 2E|N(-delta,2)| - 2E|N(0,2)|."""
    s = math.sqrt(2.0)
    e_abs = s * math.sqrt(2 / math.pi) * math.exp(-delta**2 / (2 * s * s)) + delta * (1 - 2 * scipy.stats.norm.cdf(-delta / s))
    return 2 * e_abs - 2 * s * math.sqrt(2 / math.pi)


def test_energy_mmd_scalar_gaussians_match_closed_form():
    # X = Z phi, Y = (Z' + delta) phi with ||phi||_L2 = 1: the L² metric reduces to |Z - Z'|.
    g = Grid(16)
    phi = (math.sqrt(2) * torch.cos(2 * math.pi * g.coords[0])).reshape(1, 1, 16)
    assert float(g.norm(phi)) == pytest.approx(1.0, rel=1e-12)
    gg = gen(5)
    n, reps = 1000, 8
    for delta in (0.5, 1.0):
        vals = []
        for _ in range(reps):
            zx = torch.randn(n, 1, 1, generator=gg, dtype=torch.float64)
            zy = torch.randn(n, 1, 1, generator=gg, dtype=torch.float64) + delta
            vals.append(energy_mmd(zx * phi, zy * phi, g))
        # measured sd of one estimate at n = 500: 0.038 (delta .5), 0.076 (delta 1); sd ~ n^-1/2
        sd = 0.076 * math.sqrt(500 / n) / math.sqrt(reps)
        assert abs(np.mean(vals) - _energy_1d_exact(delta)) < 4 * sd


def test_energy_mmd_grows_quadratically_in_small_shift():
    x, y = draw(G32, 300, 20), draw(G32, 300, 21)
    delta = 0.1 * torch.cos(2 * math.pi * G32.mesh()[0]).reshape(1, 1, 32, 32)  # ||delta|| = 0.0707
    # common random numbers: the null fluctuation E(x, y) is the same for both shifts
    e0 = energy_mmd(x, y, G32)
    e1, e2 = energy_mmd(x, y + delta, G32) - e0, energy_mmd(x, y + 2 * delta, G32) - e0
    assert e1 > 0 and 3.0 < e2 / e1 < 5.0  # exact limit 4 as delta -> 0


def test_energy_mmd_resolution_agreement():
    x64, y64 = draw(G64, 80, 30), draw(G64, 80, 31) + 0.05
    # band-limited to the 32-grid: identical functions, only quadrature differs -> exact agreement
    x32, y32 = resample(x64, G64, G32), resample(y64, G64, G32)
    x_up, y_up = resample(x32, G32, G64), resample(y32, G32, G64)
    assert energy_mmd(x32, y32, G32) == pytest.approx(energy_mmd(x_up, y_up, G64), rel=1e-9)
    # nested draws: the 64-grid sample adds modes 16..31 (0.05% of the variance for this Matérn)
    e32 = energy_mmd(draw(G32, 80, 30), draw(G32, 80, 31) + 0.05, G32)
    assert e32 == pytest.approx(energy_mmd(x64, y64, G64), rel=1e-2)


def test_energy_mmd_chunking_and_v_statistic():
    x, y = draw(G32, 23, 32), draw(G32, 17, 33) + 0.1
    e = energy_mmd(x, y, G32)
    assert energy_mmd(x, y, G32, chunk=5) == pytest.approx(e, rel=1e-12)
    d = pairwise_l2(torch.cat([x, y]), torch.cat([x, y]), G32)
    dxy, dxx, dyy = d[:23, 23:].mean(), d[:23, :23].sum() / (23 * 22), d[23:, 23:].sum() / (17 * 16)
    assert e == pytest.approx(float(2 * dxy - dxx - dyy), rel=1e-10)
    v = energy_mmd(x, y, G32, unbiased=False)
    assert v == pytest.approx(float(2 * dxy - d[:23, :23].mean() - d[23:, 23:].mean()), rel=1e-10)


def test_spectrum_1d():
    g = Grid(64, length=2.0)
    x = COV.sample(g, 400, generator=gen(3), dtype=torch.float64)
    om, p = radial_spectrum(x, g)
    _, lam = shell_average(COV.eigenvalues(g), g)
    assert len(om) == 32 and om[1] == pytest.approx(math.pi)  # shells of width 2 pi / L
    # each 1-D shell j >= 1 holds the pair +-k: one complex normal -> sd sqrt(2 / (2n)) = 0.05
    assert torch.all(((p / lam)[1:] - 1).abs() < 4.5 * math.sqrt(1 / 400))


def test_mismatch_and_nonfinite_errors():
    x32, x64 = draw(G32, 4, 0), draw(G64, 4, 0)
    with pytest.raises(ValueError, match=r"\(4, 1, 32, 32\).*\(4, 1, 64, 64\)"):
        energy_mmd(x32, x64, G32)
    bad = x32.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        energy_mmd(bad, x32, G32)
    with pytest.raises(ValueError, match="at least 2"):
        energy_mmd(x32[:1], x32, G32)
    with pytest.raises(ValueError):
        sliced_wasserstein(x32, x32[:, :, :16], G32)


# --------------------------------------------------------------------------- sliced Wasserstein
def test_wasserstein_1d_against_scipy_and_unequal_sizes():
    gg = gen(7)
    a = torch.randn(37, generator=gg, dtype=torch.float64)
    b = torch.randn(53, generator=gg, dtype=torch.float64) * 2 + 1
    assert float(wasserstein_1d(a, b, p=1)) == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-10)
    assert float(wasserstein_1d(a, a.repeat(3), p=2)) == pytest.approx(0.0, abs=1e-12)
    # W2 between two point masses = |difference|
    assert float(wasserstein_1d(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0, 3.0]))) == pytest.approx(2.0)


def test_sliced_wasserstein_identical_and_shift():
    x = draw(G32, 50, 40)
    assert sliced_wasserstein(x, x, G32, 32, gen(0)) == 0.0
    delta = 0.2 * torch.sin(2 * math.pi * (G32.mesh()[0] + 2 * G32.mesh()[1])).reshape(1, 1, 32, 32) + 0.1
    sw = sliced_wasserstein(x, x + delta, G32, 32, gen(0))
    th = random_directions(G32, 32, 1, gen(0))  # the same directions
    expected = float(project(delta, th, G32).square().mean().sqrt())
    assert sw == pytest.approx(expected, rel=1e-10)
    assert 0 < sw <= float(G32.norm(delta)) + 1e-12  # |<delta, theta>| <= ||delta||
    # a pure shift changes only means: Gaussian fit gives the same value
    assert gaussian_sliced_wasserstein(x, x + delta, G32, 32, gen(0)) == pytest.approx(sw, rel=1e-10)
    assert gaussian_sliced_wasserstein(x, x, G32, 32, gen(0)) == 0.0


def test_sliced_wasserstein_resolution_agreement():
    x32, y32 = draw(G32, 100, 50), 1.3 * draw(G32, 100, 51)
    x64, y64 = draw(G64, 100, 50), 1.3 * draw(G64, 100, 51)
    sw32 = sliced_wasserstein(x32, y32, G32, 64, gen(1))
    sw64 = sliced_wasserstein(x64, y64, G64, 64, gen(1))  # nested data and nested directions
    assert sw32 > 0.01 and sw32 == pytest.approx(sw64, rel=2e-2)
    th32, th64 = random_directions(G32, 4, 1, gen(2)), random_directions(G64, 4, 1, gen(2))
    cos = G64.inner(resample(th32, G32, G64), th64)
    assert torch.all(cos > 0.99)  # the same random functions, seen at two resolutions


def test_fourier_frechet_distance():
    x64 = draw(G64, 300, 60)
    x32 = resample(x64, G64, G32)
    f = fourier_features(x64, G64, 3)
    assert f.shape == (300, 2 * 7 * 4 - 1)  # rfft box 7 x 4, real + imaginary parts, Im(k = 0) left out
    g7 = Grid((7, 7))  # keeps exactly |k_i| <= 3: features are an L²-isometry of that projection
    assert torch.allclose(f.square().sum(1), g7.norm(resample(x64, G64, g7)).square(), rtol=1e-10)
    assert fourier_frechet_distance(x64, x32, G64, 3, grid_y=G32) < 1e-9
    y = draw(G64, 300, 61)
    fd_same = fourier_frechet_distance(x64, y, G64, 3)
    fd_scaled = fourier_frechet_distance(x64, 2 * y, G64, 3)
    assert fd_scaled > 5 * fd_same
    with pytest.raises(ValueError, match="max_mode"):
        fourier_features(x32, G32, 16)


# --------------------------------------------------------------------------- Fréchet
def test_frechet_identical_and_closed_form():
    gg = gen(8)
    f = torch.randn(200, 6, generator=gg, dtype=torch.float64)
    assert frechet_distance(f, f) < 1e-10
    # features with exactly prescribed sample moments: whiten, then colour
    d = 5
    mu1, mu2 = np.arange(d, dtype=float), np.ones(d)
    a1 = np.random.default_rng(0).normal(size=(d, d))
    a2 = np.random.default_rng(1).normal(size=(d, d))
    c1, c2 = a1 @ a1.T + 0.1 * np.eye(d), a2 @ a2.T + 0.1 * np.eye(d)

    def with_moments(mu, c, seed):
        z = np.random.default_rng(seed).normal(size=(400, d))
        z = z - z.mean(0)
        z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
        return torch.from_numpy(mu + z @ np.linalg.cholesky(c).T)

    fx, fy = with_moments(mu1, c1, 2), with_moments(mu2, c2, 3)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(fx, fy) == pytest.approx(ref, rel=1e-8)
    # diagonal (commuting) case: sum (sqrt a - sqrt b)²
    va, vb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    assert gaussian_frechet(np.zeros(3), np.diag(va), np.ones(3), np.diag(vb)) == pytest.approx(
        3 + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2), rel=1e-12)
    with pytest.raises(ValueError):
        frechet_distance(f, f[:, :3])


# --------------------------------------------------------------------------- Vendi
def test_vendi_identical_and_orthogonal():
    x = draw(G32, 1, 70).repeat(8, 1, 1, 1)
    assert vendi_score(x, G32) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(x, G32, kernel="cosine") == pytest.approx(1.0, abs=1e-9)
    X, Y = G32.mesh()
    modes = [(1, 0), (0, 1), (1, 1), (2, 1), (0, 3), (3, 2)]
    funcs = [torch.cos(2 * math.pi * (a * X + b * Y)) for a, b in modes] + [torch.sin(2 * math.pi * (a * X + b * Y)) for a, b in modes]
    orth = torch.stack(funcs)[:, None]
    n = len(funcs)
    assert vendi_score(orth, G32, kernel="cosine") == pytest.approx(n, rel=1e-9)
    assert vendi_score(orth, G32, kernel="rbf", bandwidth=0.05) == pytest.approx(n, rel=1e-9)
    assert 1 < vendi_score(orth, G32) < n  # median bandwidth: all pairs equally far, K_ij = e^-1/2
    # resolution: the same trigonometric functions on a 16-grid
    G16 = Grid((16, 16))
    assert vendi_score(subsample(orth, G32, 2)[0], G16) == pytest.approx(vendi_score(orth, G32), rel=1e-9)
    with pytest.raises(ValueError, match="kernel"):
        vendi_score(orth, G32, kernel="laplace")


# --------------------------------------------------------------------------- point values
def test_pointwise_value_distance():
    x, y = draw(G64, 20, 80), draw(G64, 20, 81)
    assert pointwise_value_distance(x, x) == 0.0
    assert pointwise_value_distance(x, x + 0.3) == pytest.approx(0.3, rel=1e-12)
    ref = scipy.stats.wasserstein_distance(x.flatten().numpy(), y.flatten().numpy())
    assert pointwise_value_distance(x, y) == pytest.approx(ref, rel=1e-9)
    # different resolutions: point values of the same functions on a sub-grid
    xs, _ = subsample(x, G64, 2)
    d_res = pointwise_value_distance(x, xs)
    assert d_res < 0.1 * pointwise_value_distance(x, 1.5 * x)
    assert pointwise_value_distance(x, y, n_quantiles=2000) == pytest.approx(pointwise_value_distance(x, y), abs=2e-3)


# --------------------------------------------------------------------------- memorization
def test_memorization_flags_copies_not_fresh_samples():
    train = draw(G32, 200, 90)
    fresh = draw(G32, 20, 91)
    copies = train[:10] + 1e-6 * draw(G32, 10, 92)
    res = memorization(torch.cat([copies, fresh]), train, G32)
    assert torch.all(res.ratios[:10] < 1e-3)
    assert torch.equal(res.nearest[:10], torch.arange(10))
    assert torch.all(res.ratios[10:] > MEMORIZATION_THRESHOLD) and res.ratios[10:].median() > 0.6
    assert res.fraction == pytest.approx(10 / 30)
    sub = memorization(fresh, train, G32, n_reference=100, generator=gen(0))
    assert sub.reference == pytest.approx(res.reference, rel=0.1)
    assert set(res.to_dict()) >= {"fraction_memorized", "threshold", "reference"}
    with pytest.raises(ValueError, match="at least 2"):
        memorization(fresh, train[:1], G32)
