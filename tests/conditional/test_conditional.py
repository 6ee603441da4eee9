"""Conditional generation (issue 15): closed forms with Gaussian data and the exact oracle, exactness, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import fsdiff as fd
from fsdiff.conditional import LowModes, Mask, PointObservations, evaluate_at_points, evaluation_matrices, sample_conditional

pytestmark = pytest.mark.usefixtures("single_thread_module")

SDE = fd.VPSDE(fd.Matern(alpha=2.0, tau=6.0))
DATA = fd.Matern(alpha=2.5, tau=4.0, sigma=3.0)
ORACLE = fd.GaussianScore(SDE, DATA)
COARSE = fd.Grid((8, 8))
U = DATA.sample(COARSE, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)[0]


@pytest.mark.parametrize("n_fine", [16, 24])
def test_low_modes_reproduce_the_per_mode_conditional_law_at_two_resolutions(n_fine):
    """Gaussian data diagonal in Fourier: observed modes exact, every other mode has its EM-chain law."""
    g, n = fd.Grid((n_fine, n_fine)), 600
    x, info = sample_conditional(ORACLE, SDE, g, n, LowModes(U, COARSE), steps=40, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(0), return_info=True)
    assert info["nfe"] == 41 and info["condition"] == "LowModes"
    obs = fd.resample(fd.resample(U[None], COARSE, g), g, COARSE)  # the observation's band-limited part
    assert float((fd.resample(x, g, COARSE) - obs).abs().max()) < 1e-12
    M, V = ORACLE.em_chain_moments(info["times"], g, denoise=True)  # zero-mean data: M = 0
    free = g.mode_mask & ~LowModes(U, COARSE).mask(g)
    xh = g.rfft(x)[:, 0]
    ratio = (xh.abs().square().mean(0) * g.volume)[free] / V[free]
    se = 1 / math.sqrt(n)  # relative standard error of a complex mode's variance
    assert abs(float(ratio.mean()) - 1) < 4 * se / math.sqrt(int(free.sum())) + 2e-3
    assert float((ratio - 1).abs().max()) < 6 * se
    mean_z = xh.mean(0)[free].abs() / (V[free] / g.volume / n).sqrt()
    assert float(mean_z.max()) < 5


def test_point_observations_reproduce_the_gaussian_posterior():
    """1-D Gaussian data, three noisy point values: mean and variance of the exact posterior (linear algebra)."""
    g = fd.Grid(16)
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=6.0))
    cov = fd.Matern(alpha=1.5, tau=3.0, sigma=2.0)
    pts, y, sig, n = torch.tensor([[0.1], [0.37], [0.8]]), torch.tensor([0.5, -0.3, 0.2]), 0.1, 1500
    x = sample_conditional(fd.GaussianScore(sde, cov), sde, g, n, PointObservations(pts, y, sig), steps=150,
                           dtype=torch.float64, generator=torch.Generator().manual_seed(0))[:, 0]
    # prior covariance on the grid points from the eigenvalues: K = F^* diag(c / |D|) F over the kept modes
    basis = torch.eye(16, dtype=torch.float64)[:, None]
    c = cov.eigenvalues(g) * g.mode_mask / g.volume
    K = torch.stack([g.irfft(g.rfft(b) * c * g.volume) for b in basis])[:, 0]  # C e_j, exact
    K = K / g.cell_volume
    A = evaluate_at_points(basis, g, evaluation_matrices(pts, g))[:, 0].T
    S = A @ K @ A.T + sig**2 * torch.eye(3, dtype=torch.float64)
    mean = K @ A.T @ torch.linalg.solve(S, y.double())
    var = (K - K @ A.T @ torch.linalg.solve(S, A @ K)).diagonal()
    assert float(((x.mean(0) - mean).abs() / (var / n).sqrt()).max()) < 4.5
    assert float((x.var(0) / var - 1).abs().max()) < 5 * math.sqrt(2 / n)


def test_point_evaluation_is_the_band_limited_interpolant():
    g = fd.Grid((12, 10), (2.0, 1.0))
    u = g.irfft(g.rfft(torch.randn(2, 1, 12, 10, dtype=torch.float64)) * g.mode_mask)
    mesh = g.mesh()
    pts = mesh.reshape(2, -1).T
    vals = evaluate_at_points(u, g, evaluation_matrices(pts, g))
    torch.testing.assert_close(vals, u.reshape(2, 1, -1), rtol=0, atol=1e-12)
    fine = fd.Grid((36, 30), (2.0, 1.0))  # the same function on a finer grid gives the same values
    torch.testing.assert_close(evaluate_at_points(fd.resample(u, g, fine), fine, evaluation_matrices(pts, fine)), vals,
                               rtol=0, atol=1e-12)


def test_mask_works_at_a_finer_target_grid():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True
    vals = fd.resample(U[None], COARSE, COARSE)[0, 0]
    x = sample_conditional(ORACLE, SDE, fd.Grid((16, 16)), 64, Mask(mask, vals, 0.02), steps=30, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    on_obs = x[:, 0, ::2, ::2][:, mask]  # vertex-centred: the 8² points are every other 16² point
    free = x[:, 0, ::2, ::2][:, ~mask]
    assert float((on_obs.mean(0) - vals[mask]).abs().mean()) < 0.1 * float(vals.abs().mean())
    # an observed pixel's posterior std is at most the noise std; the unobserved half varies more
    assert float(on_obs.std(0).mean()) < 0.02 * 1.15 and float(free.std(0).mean()) > 2 * float(on_obs.std(0).mean())


def test_bad_input_is_refused_clearly():
    g = fd.Grid((16, 16))
    with pytest.raises(ValueError, match="finer than the target"):
        sample_conditional(ORACLE, SDE, fd.Grid((8, 8)), 2, LowModes(torch.zeros(16, 16), g))
    with pytest.raises(ValueError, match="different domains"):
        sample_conditional(ORACLE, SDE, g, 2, LowModes(U, fd.Grid((8, 8), 2.0)))
    with pytest.raises(ValueError, match="outside the domain"):
        sample_conditional(ORACLE, SDE, g, 2, PointObservations(torch.tensor([[0.5, 1.2]]), torch.tensor([1.0])))
    with pytest.raises(ValueError, match="2-D"):
        sample_conditional(ORACLE, SDE, g, 2, PointObservations(torch.tensor([[0.5]]), torch.tensor([1.0])))
    with pytest.raises(ValueError, match="mask's shape"):
        Mask(torch.ones(8, 8, dtype=torch.bool), torch.zeros(8, 7))
    with pytest.raises(ValueError, match="1-D but the target grid"):
        sample_conditional(ORACLE, SDE, g, 2, Mask(torch.ones(8, dtype=torch.bool), torch.zeros(8)))
    with pytest.raises(TypeError, match="bool"):
        Mask(torch.ones(8, 8), torch.zeros(8, 8))
    with pytest.raises(ValueError, match="non-finite"):
        PointObservations(torch.tensor([[0.5, 0.5]]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="non-finite"):
        LowModes(torch.full((8, 8), float("inf")), COARSE)
    with pytest.raises(ValueError, match="noise_std"):
        PointObservations(torch.tensor([[0.5, 0.5]]), torch.tensor([1.0]), noise_std=-1)
    with pytest.raises(ValueError, match="channel"):
        sample_conditional(ORACLE, SDE, g, 2, LowModes(U, COARSE), channels=2)
    with pytest.raises(ValueError, match="resample applies to LowModes"):
        sample_conditional(ORACLE, SDE, g, 2, PointObservations(torch.tensor([[0.5, 0.5]]), torch.tensor([1.0])), resample=1)
    with pytest.raises(TypeError, match="per-mode statistics"):
        sample_conditional(lambda x, t, grid: x, SDE, g, 2, PointObservations(torch.tensor([[0.5, 0.5]]), torch.tensor([1.0])))
