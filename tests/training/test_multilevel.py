"""Multilevel hierarchies and schedules; the MLMC loss estimate is unbiased for the finest level."""

import math

import pytest
import torch
from torch import nn

import fsdiff as fd
from fsdiff.data import GaussianRandomField
from fsdiff.training.multilevel import MultilevelSchedule, ValidationSet, draw_terms, hierarchy, mlmc_loss, term_loss
from fsdiff.training import make_generators

pytestmark = pytest.mark.usefixtures("single_thread")




class PointwiseSpectral(nn.Module):
    """Stand-in model whose loss *does* depend on the resolution: low-mode multiplier plus pointwise terms."""

    def __init__(self, K: int = 2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.K = K
        self.w = nn.Parameter(0.3 * torch.randn(2, K + 1, generator=g))
        self.a = nn.Parameter(torch.tensor([0.3, -0.2, 0.5]))

    def forward(self, x, t, grid):
        k = grid.wavenumbers[-1]
        m = torch.zeros(x.shape[0], 1, *grid.rfft_shape)
        m[..., : self.K + 1] = self.w[0] + t.reshape(-1, 1, 1) * self.w[1]
        low = grid.irfft(grid.rfft(x) * m)
        tt = t.reshape(-1, 1, 1)
        return low + (self.a[0] + self.a[1] * tt) * x + self.a[2] * torch.tanh(x)


def _problem():
    grid = fd.Grid((32,))
    grids = hierarchy(grid, [8, 16, 32])
    data = GaussianRandomField(fd.Matern(alpha=0.6, tau=1.0, sigma=1.0))
    sde = fd.VPSDE(fd.Matern(alpha=0.6, tau=1.0))
    return grids, data, sde


def test_hierarchy_validates_levels():
    g = fd.Grid((64, 64))
    assert [x.shape for x in hierarchy(g, [16, 32, 64])] == [(16, 16), (32, 32), (64, 64)]
    assert hierarchy(g) == [g]
    with pytest.raises(ValueError, match="increasing"):
        hierarchy(g, [32, 16, 64])
    with pytest.raises(ValueError, match="end at"):
        hierarchy(g, [16, 32])


def test_schedules_visit_levels_as_configured():
    grids = hierarchy(fd.Grid((64, 64)), [16, 32, 64])
    single = MultilevelSchedule(grids, "single")
    assert {single.level(s, 50) for s in range(50)} == {2}
    assert {MultilevelSchedule(grids, "single", level=0).level(s, 50) for s in range(50)} == {0}
    c2f = MultilevelSchedule(grids, "coarse_to_fine", fractions=[5, 3, 2])
    seq = [c2f.level(s, 100) for s in range(100)]
    assert seq == sorted(seq) and [seq.count(l) for l in range(3)] == [50, 30, 20]
    rnd = MultilevelSchedule(grids, "random", probabilities=[0.6, 0.3, 0.1])
    gen = torch.Generator().manual_seed(0)
    seq = [rnd.level(s, 3000, gen) for s in range(3000)]
    for l, p in enumerate([0.6, 0.3, 0.1]):
        assert abs(seq.count(l) / 3000 - p) < 4 * math.sqrt(p * (1 - p) / 3000)
    gen = torch.Generator().manual_seed(0)
    assert seq[:100] == [rnd.level(s, 3000, gen) for s in range(100)]  # reproducible from the generator
    with pytest.raises(ValueError, match="fractions"):
        MultilevelSchedule(grids, "coarse_to_fine", fractions=[1, 1])
    with pytest.raises(ValueError, match="schedule"):
        MultilevelSchedule(grids, "fine_to_coarse")


def test_mlmc_terms_are_coupled_and_nested():
    grids, data, sde = _problem()
    sched = MultilevelSchedule(grids, "mlmc", samples=[12, 6, 3])
    terms = draw_terms(sched, 0, 10, data, sde, 99, make_generators(0))
    assert [(tm.level, tm.n, tm.coupled) for tm in terms] == [(0, 12, False), (1, 6, True), (2, 3, True)]
    for tm in terms:
        assert tm.x0.shape == (tm.n, 1, *grids[tm.level].shape) and tm.eta.shape == tm.x0.shape
    assert sched.mlmc_samples(16) == [12, 6, 3]
    assert MultilevelSchedule(grids, "mlmc").mlmc_samples(16) == [16, 8, 4]
    # a coupled difference vanishes for a model whose loss does not see the resolution
    model = lambda x, t, g: torch.zeros_like(x)  # noqa: E731 - loss = ||eta||², coupled diff = tail energy >= 0
    d = term_loss(model, terms[2], grids, sde)
    assert (d >= 0).all() and float(d.max()) < 0.3 * float(term_loss(model, terms[0], grids, sde).mean())


def _flat_grad(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).double()


def test_mlmc_gradient_is_unbiased_for_the_finest_level():
    grids, data, sde = _problem()
    model = PointwiseSpectral()
    R = 300
    gens = make_generators(1)
    mlmc = torch.stack([_flat_grad(model, mlmc_loss(model, data, sde, grids, [24, 8, 4], gens, restrict_from_finest=True))
                        for _ in range(R)])
    gens = make_generators(2)
    fine_sched = MultilevelSchedule(grids, "single")
    coarse_sched = MultilevelSchedule(grids, "single", level=0)

    def direct(sched):
        tm = draw_terms(sched, 0, 1, data, sde, 12, gens, restrict_from_finest=True)[0]
        return _flat_grad(model, term_loss(model, tm, grids, sde).mean())

    fine = torch.stack([direct(fine_sched) for _ in range(R)])
    coarse = torch.stack([direct(coarse_sched) for _ in range(R)])
    se = lambda g: g.std(0) / math.sqrt(R)  # noqa: E731
    z = (mlmc.mean(0) - fine.mean(0)) / (se(mlmc) ** 2 + se(fine) ** 2).sqrt()
    assert z.abs().max() < 4.0, z
    # the test has power: the coarse-level gradient is a biased estimate of the finest one
    z_coarse = (coarse.mean(0) - fine.mean(0)) / (se(coarse) ** 2 + se(fine) ** 2).sqrt()
    assert z_coarse.abs().max() > 6.0, z_coarse


def test_validation_set_is_fixed_and_restricted():
    grids, data, sde = _problem()
    val = ValidationSet(data, grids, sde, n=16, seed=3)
    x_fine = val.data[-1][0]
    torch.testing.assert_close(val.data[0][0], fd.resample(x_fine, grids[-1], grids[0]))
    model = PointwiseSpectral()
    a, b = val.losses(model), val.losses(model)
    assert a == b and len(a) == 3 and all(math.isfinite(v) and v > 0 for v in a)
    assert ValidationSet(data, grids, sde, n=16, seed=3).losses(model) == a
