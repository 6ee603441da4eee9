"""Gaussian-mixture family, exact scores and kernel mean embeddings (fsdiff.sno.gmm, fsdiff.sno.embedding)."""

from __future__ import annotations

import math

import pytest
import torch

import fsdiff as fd
from fsdiff.sno.embedding import KernelMeanEmbedding, prototype_encoding
from fsdiff.points.metrics import energy_distance as energy_distance_points
from fsdiff.points.metrics import sliced_wasserstein as sliced_wasserstein_points
from fsdiff.sno.gmm import GMMFamily

pytestmark = pytest.mark.usefixtures("single_thread")

SDES = {
    "vp": fd.VPSDE(fd.White(), beta_min=0.1, beta_max=20.0),
    "ve": fd.VESDE(fd.White(), sigma_min=0.01, sigma_max=5.0),
}


def _family(**kw) -> GMMFamily:
    return GMMFamily(anisotropy=0.5, random_weights=True, **kw)


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_exact_score_matches_autograd(kind):
    """Closed-form score of p_t vs autograd of log p_t, per-point times, float64 (tol 1e-9 relative)."""
    sde = SDES[kind]
    fam = _family()
    mix = fam.mixture(fam.test_combinations[0])
    g = torch.Generator().manual_seed(0)
    n = 64
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.999 + 0.001
    x = mix.sample_perturbed(n, t, sde, g, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x, t, sde).sum(), x)
    s = mix.score(x.detach(), t, sde)
    assert torch.allclose(s, grad, rtol=1e-9, atol=1e-9 * grad.abs().max().item())


def test_batched_score_and_data_score():
    """Batched mixtures agree with the unbatched ones; t=None gives grad log p_0 (tol 1e-9)."""
    fam = _family()
    combos = fam.train_combinations[:3]
    batch = fam.mixtures(combos)
    g = torch.Generator().manual_seed(1)
    x = batch.sample(16, g, torch.float64)
    t = torch.full((3, 16), 0.3, dtype=torch.float64)
    sb = batch.score(x, t, SDES["vp"])
    for b, c in enumerate(combos):
        assert torch.allclose(sb[b], fam.mixture(c).score(x[b], t[b], SDES["vp"]), atol=1e-10)
    xg = x[0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(batch[0].log_prob(xg).sum(), xg)
    assert torch.allclose(batch[0].score(x[0]), grad, atol=1e-9)


def test_sampler_moments():
    """Sample mean/covariance of 40000 exact draws within 0.03 of the mixture's (a ~5-sigma band)."""
    fam = _family()
    mix = fam.mixture(fam.test_combinations[1])
    x = mix.sample(40000, torch.Generator().manual_seed(2), torch.float64)
    mean = mix.mean()
    w, mu, C = mix.weights, mix.means, mix.covs
    cov = (w[:, None, None] * (C + (mu - mean)[:, :, None] * (mu - mean)[:, None, :])).sum(0)
    assert torch.allclose(x.mean(0), mean, atol=0.03)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.03)


def test_family_split_holds_out_combinations():
    fam = GMMFamily(lattice=(3, 3), n_components=3, test_fraction=0.2, seed=3)
    train, test = fam.split()
    assert len(train) + len(test) == math.comb(9, 3) and len(test) == round(0.2 * 84)
    assert not set(train) & set(test)
    assert set(range(9)) == {c for combo in train for c in combo}  # every cell is seen in training
    assert fam.split() == GMMFamily(lattice=(3, 3), n_components=3, test_fraction=0.2, seed=3).split()
    with pytest.raises(ValueError, match="distinct cells"):
        fam.mixture((0, 0, 1))
    with pytest.raises(ValueError, match="n_components"):
        GMMFamily(lattice=(2, 2), n_components=4)


def test_kme_exact_vs_empirical_converges():
    """Relative quadrature-L² error of the empirical embedding vs the exact one falls like n^-1/2:
    16x the samples gives < 0.45x the error (expected 0.25x), and the error at n = 16384 is < 6%."""
    fam = GMMFamily()
    (ox, oy), L = fam.box()
    kme = KernelMeanEmbedding(fd.Grid((32, 32), L), (ox, oy), bandwidth=0.2)
    mix = fam.mixture(fam.test_combinations[0])
    exact = kme.exact_gmm(mix, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    errs = {}
    for n in (256, 4096, 16384):
        emp = kme.empirical(mix.sample(n, g, torch.float64), dtype=torch.float64)
        errs[n] = float(kme.grid.norm(emp - exact)) / float(kme.grid.norm(exact))
    assert errs[4096] < 0.45 * errs[256]
    assert errs[16384] < 0.06
    # the embedding is the mollified density: it integrates to ~1 over the box
    assert abs(float(kme.grid.integrate(exact[0, 0])) - 1.0) < 1e-4


def test_kme_grids_nest_and_validate():
    fam = GMMFamily()
    (ox, oy), L = fam.box()
    fine = KernelMeanEmbedding(fd.Grid((64, 64), L), (ox, oy), 0.2)
    coarse = fine.with_grid(32)
    mix = fam.mixture(fam.train_combinations[0])
    assert torch.allclose(fine.exact_gmm(mix)[..., ::2, ::2], coarse.exact_gmm(mix), atol=1e-6)
    y = mix.sample(10, torch.Generator().manual_seed(0))
    assert torch.allclose(fine.empirical(y)[..., ::2, ::2], coarse.empirical(y), atol=1e-6)
    assert coarse.empirical(y[None].expand(3, -1, -1)).shape == (3, 1, 32, 32)
    with pytest.raises(ValueError, match="bandwidth"):
        KernelMeanEmbedding(fd.Grid((8, 8)), (0.0, 0.0), 0.0)
    with pytest.raises(ValueError, match="samples must be"):
        coarse.empirical(torch.zeros(5, 3))
    assert prototype_encoding(torch.ones(2, 7, 4)).shape == (2, 4)


def test_point_metrics():
    """Energy distance ~0 (|.| < 0.01) for two draws of one law and > 0.1 for a shift of 1; SW2 ~ shift."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    c = b + torch.tensor([1.0, 0.0])
    assert abs(energy_distance_points(a, b)) < 0.01
    assert energy_distance_points(a, c) > 0.1
    sw = sliced_wasserstein_points(a, c, n_projections=256, generator=g)
    assert 0.55 < sw < 0.85  # E|<theta, shift>|² = 1/2 in 2-D -> SW2 ~ 0.71
    with pytest.raises(ValueError):
        energy_distance_points(a, torch.zeros(10, 3))


def test_draw_encodings_mixes_exact_and_empirical():
    from fsdiff.sno.training import draw_encodings

    fam = GMMFamily()
    (ox, oy), L = fam.box()
    kme = KernelMeanEmbedding(fd.Grid((16, 16), L), (ox, oy), 0.2)
    mix = fam.mixtures(fam.train_combinations[:6])
    u, ns = draw_encodings(mix, kme, (1, 64), 0.5, torch.Generator().manual_seed(0))
    assert u.shape == (6, 1, 16, 16) and len(ns) == 6 and all(n == 0 or 1 <= n <= 64 for n in ns)
    exact = kme.exact_gmm(mix)
    for b, n in enumerate(ns):
        assert torch.allclose(u[b], exact[b]) == (n == 0)
