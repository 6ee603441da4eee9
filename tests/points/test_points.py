"""Point-space diffusion (Q = I) against the exact score of Gaussian data."""

import torch

from fsdiff import Matern, VPSDE
from fsdiff.points import perturb_points, sample_points


def _gaussian_score(sde, mean, var):
    # data N(mean, diag(var)); p_t = N(m mean, m² var + s²)
    def score(x, t):
        m = sde.mean_scale(t).to(x.dtype)[:, None]
        s = sde.std(t).to(x.dtype)[:, None]
        return -(x - m * mean) / (m**2 * var + s**2)
    return score


def test_sample_points_reproduces_gaussian_moments():
    sde = VPSDE(Matern(), beta_min=0.1, beta_max=20.0)
    mean, var = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.25, 2.0], dtype=torch.float64)
    score = _gaussian_score(sde, mean, var)
    n = 4000  # MC std of a sample mean: sqrt(var/n) <= 0.023; of a variance: var*sqrt(2/n) <= 0.045
    for method in ("em", "ode"):
        x = sample_points(score, sde, n, 2, steps=400, method=method, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        assert torch.allclose(x.mean(0), mean, atol=0.1), (method, x.mean(0))
        assert torch.allclose(x.var(0), var, rtol=0.12), (method, x.var(0))


def test_perturb_points_marginal():
    sde = VPSDE(Matern())
    x0 = torch.ones(20000, 3, dtype=torch.float64)
    t = torch.full((20000,), 0.3, dtype=torch.float64)
    xt, z = perturb_points(x0, t, sde, generator=torch.Generator().manual_seed(1))
    assert abs(xt.mean() - float(sde.mean_scale(0.3))) < 0.01
    assert abs(xt.std() - float(sde.std(0.3))) < 0.01
