"""Spectral preconditioning, data statistics and the band-limited U-shaped operator (issue 11)."""

import math

import pytest
import torch

import fsdiff as fd
from fsdiff.data.statistics import SpectralStatistics
from fsdiff.io import load_checkpoint, save_checkpoint
from fsdiff.losses import sample_time
from fsdiff.models import build_model
from fsdiff.models.uno import band_limit
from fsdiff.eval.quality import band_power, power_fraction_beyond
from fsdiff.sampling import noise_level

Q = fd.Matern(alpha=1.5, tau=10.0, sigma=7.9)
C_DATA = fd.Matern(alpha=2.0, tau=5.0, sigma=3.0)


def _exact_stats(grid: fd.Grid, cov: fd.Covariance, mean: torch.Tensor, extrapolation: str = "zero") -> SpectralStatistics:
    """Statistics set to the exact spectrum of ``cov`` and the mean function ``mean (1, *shape)``."""
    st = SpectralStatistics(grid.shape, grid.length, 1, extrapolation)
    st.mean.copy_(mean)
    st.variance.copy_(cov.eigenvalues(grid)[None])
    st.count.fill_(10**6)
    return st


def _mean(grid: fd.Grid) -> torch.Tensor:
    x, y = grid.mesh()
    return (0.3 + 0.2 * torch.sin(2 * math.pi * x) * torch.cos(4 * math.pi * y))[None]


class _ZeroNet(torch.nn.Module):
    """A residual network that returns zeros (cheap stand-in for an untrained UNOScore)."""

    in_channels = cond_channels = 1
    spec = {"type": "zero"}

    def forward(self, x, t, grid, cond):
        return torch.zeros_like(x)


def _zero_precond(st: SpectralStatistics, sde: fd.SDE, K: int, uno: bool = False) -> fd.SpectralPreconditioner:
    net = fd.UNOScore(1, K, (8, 8, 8), 1, cond_channels=1).double() if uno else _ZeroNet()
    return fd.SpectralPreconditioner(net, sde, st)


# ------------------------------------------------------------------ statistics
def test_statistics_estimate_per_mode_mean_and_variance():
    g = fd.Grid((16, 16))
    data = C_DATA.sample(g, 20000, generator=torch.Generator().manual_seed(0)).double() + _mean(g)
    st = SpectralStatistics(g.shape).fit(data)
    lam = C_DATA.eigenvalues(g)
    kept = g.mode_mask & (lam > 1e-3 * lam.max())
    rel = (st.variance[0][kept] / lam[kept] - 1).abs()
    assert rel.mean() < 0.03 and rel.max() < 0.12  # chi-square scatter of 20000 draws
    torch.testing.assert_close(st.mean, _mean(g), atol=0.03, rtol=0)
    assert abs(float(st.pointwise_variance()) - C_DATA.pointwise_variance(g)) / C_DATA.pointwise_variance(g) < 0.02


def test_snr_profile_is_the_ratio_of_the_two_spectra_per_shell():
    g = fd.Grid((32, 32))
    st = _exact_stats(g, C_DATA, _mean(g))
    prof = dict(st.snr_profile(Q))
    # both spectra are Matérn: c_k / lambda_k = (s_c² / s_q²) (tau_q² + 4π²|k|²)^a_q / (tau_c² + 4π²|k|²)^a_c
    r = torch.tensor(list(prof), dtype=torch.float64)
    shell_mean = []
    k2 = sum(k.double() ** 2 for k in g.wavenumbers)
    k2 = torch.broadcast_to(k2, g.rfft_shape)
    ratio = C_DATA.eigenvalues(g) / Q.eigenvalues(g)
    for rr in r:
        sel = (k2.sqrt().round() == rr) & g.mode_mask
        shell_mean.append(float(ratio[sel].mean()))
    torch.testing.assert_close(torch.tensor([prof[int(v)] for v in r]), torch.tensor(shell_mean), rtol=1e-10, atol=0)
    # the data decay faster (alpha 2 vs 1.5): the profile falls at large |k|, i.e. coarse scales first
    assert prof[12] < prof[4]


def test_zero_extrapolation_and_exponential_tail_fit():
    g = fd.Grid((32, 32))
    st = _exact_stats(g, C_DATA, _mean(g))
    fine = fd.Grid((64, 64))
    eig = st.eigenvalues(fine)[0]
    inside = torch.ones(fine.rfft_shape, dtype=torch.bool)
    for k in fine.wavenumbers:
        inside &= k.abs() <= 15
    assert float(eig[~inside].abs().max()) == 0.0
    coarse = fd.Grid((16, 16))  # coarser grids read the table
    torch.testing.assert_close(st.eigenvalues(coarse)[0], C_DATA.eigenvalues(coarse))
    # an exactly exponential spectrum is recovered by the fit, beyond the grid too
    a, b = -2.0, 0.7
    r = torch.sqrt(sum(k.double() ** 2 for k in g.wavenumbers)).expand(g.rfft_shape)
    sx = SpectralStatistics(g.shape, extrapolation="exponential")
    sx.variance.copy_((torch.exp(a - b * r) * g.mode_mask)[None])
    sx.count.fill_(100)
    sx.tail.copy_(sx._fit_tail())
    torch.testing.assert_close(sx.tail[0], torch.tensor([a, b], dtype=torch.float64), atol=1e-9, rtol=0)
    rf = torch.sqrt(sum(k.double() ** 2 for k in fine.wavenumbers)).expand(fine.rfft_shape)
    torch.testing.assert_close(sx.eigenvalues(fine)[0], torch.exp(a - b * rf) * fine.mode_mask)


def test_statistics_survive_a_checkpoint_round_trip(tmp_path):
    g = fd.Grid((28, 28))
    data = C_DATA.sample(g, 64, generator=torch.Generator().manual_seed(1)) + 0.2
    model = fd.SpectralPreconditioner(fd.UNOScore(1, 13, (8, 8, 8), 1, cond_channels=1), fd.VPSDE(Q),
                                      SpectralStatistics(g.shape, extrapolation="exponential").fit(data))
    save_checkpoint(tmp_path / "m.pt", {"config": {}, "model": {"spec": model.spec, "state_dict": model.state_dict()}, "step": 0})
    ck = load_checkpoint(tmp_path / "m.pt")
    back = build_model(ck["model"]["spec"])
    back.load_state_dict(ck["model"]["state_dict"])
    for grid in (g, fd.Grid((56, 56))):
        torch.testing.assert_close(back.statistics.eigenvalues(grid), model.statistics.eigenvalues(grid))
        torch.testing.assert_close(back.statistics.mean_on(grid), model.statistics.mean_on(grid))
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(back(x, torch.tensor([0.1, 0.6]), g), model(x, torch.tensor([0.1, 0.6]), g))


def test_unfitted_statistics_refuse_to_be_used():
    st = SpectralStatistics((16, 16))
    with pytest.raises(RuntimeError, match="fit"):
        st.eigenvalues(fd.Grid((16, 16)))
    with pytest.raises(ValueError, match="extrapolation"):
        SpectralStatistics((16, 16), extrapolation="powerlaw")


# ------------------------------------------------------------------ preconditioner
@pytest.mark.parametrize("n", [16, 32])
def test_zero_network_is_exactly_the_gaussian_oracle(n):
    g32 = fd.Grid((32, 32))
    sde = fd.VPSDE(Q)
    st = _exact_stats(g32, C_DATA, _mean(g32))
    model = _zero_precond(st, sde, 15, uno=True)  # a freshly built UNOScore: its output convolution is zero
    oracle = fd.GaussianScore(sde, C_DATA, mean=_mean(g32)[0], mean_grid=g32)
    g = fd.Grid((n, n))
    x = torch.randn(4, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.002, 0.05, 0.4, 1.0], dtype=torch.float64)
    ref = oracle(x, t, g)
    torch.testing.assert_close(model(x, t, g), ref, atol=1e-12 * float(ref.abs().max()), rtol=0)


def test_zero_network_beyond_the_statistics_grid_is_the_band_limited_oracle():
    """Beyond the estimation grid, zero extrapolation is the oracle of data with no power there."""
    g32 = fd.Grid((32, 32))
    sde = fd.VPSDE(Q)
    st = _exact_stats(g32, C_DATA, torch.zeros(1, 32, 32))
    model = _zero_precond(st, sde, 15)
    oracle = fd.GaussianScore(sde, st.as_covariance())
    g = fd.Grid((64, 64))
    x = torch.randn(3, 1, 64, 64, dtype=torch.float64)
    t = torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64)
    out = model(x, t, g)
    torch.testing.assert_close(out, oracle(x, t, g), atol=1e-10, rtol=0)
    # on modes without data power the model returns x_t / s(t) exactly: eta is all there is
    beyond = torch.zeros(g.rfft_shape, dtype=torch.bool)
    for k in g.wavenumbers:
        beyond |= k.abs() > 15
    sel = beyond & g.mode_mask
    s = sde.std(t).reshape(-1, 1, 1, 1)
    diff = (g.rfft(out) - g.rfft(x) / s)[..., sel]
    assert float(diff.abs().max()) < 1e-10


def test_sampling_the_zero_network_reproduces_per_mode_variances_at_two_resolutions():
    g16 = fd.Grid((16, 16))
    sde = fd.VPSDE(Q)
    st = _exact_stats(g16, C_DATA, torch.zeros(1, 16, 16))
    model = _zero_precond(st, sde, 7)
    for n in (16, 32):
        g = fd.Grid((n, n))
        x = fd.sample(model, sde, g, 2000, sampler="ode", steps=40, time_grid="edm",
                      generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        var = g.rfft(x).abs().square().mean((0, 1)) * g.volume
        target = st.eigenvalues(g)[0]
        big = target > 1e-2 * target.max()
        rel = (var[big] / target[big] - 1).abs()
        assert rel.mean() < 0.05, (n, float(rel.mean()))
        assert float(var[target == 0].max()) < 1e-12 * float(target.max())  # nothing where the data have nothing


@pytest.mark.parametrize("position", [False, True])
def test_preconditioned_uno_is_resolution_invariant_32_to_256(position):
    torch.manual_seed(0)
    g32 = fd.Grid((32, 32))
    data = C_DATA.sample(g32, 256, generator=torch.Generator().manual_seed(4)) + 0.1
    st = SpectralStatistics(g32.shape, extrapolation="exponential").fit(data)
    net = fd.UNOScore(1, 15, (8, 16, 16), 1, cond_channels=1, position=position)
    model = fd.SpectralPreconditioner(net, fd.VPSDE(Q), st)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the output conv starts at zero: make the residual non-trivial
    model = model.double()
    fine = fd.Grid((256, 256))
    x = torch.randn(2, 1, 256, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.05, 0.7], dtype=torch.float64)
    with torch.no_grad():
        out = model(x, t, fine)
        resid = out - model.gaussian_parts(x, t, fine)[0]
        assert float(resid.norm()) > 0.05 * float(out.norm())
        for n in (32, 64, 128):
            g = fd.Grid((n, n))
            ref = fd.resample(out, fine, g)
            got = model(fd.resample(x, fine, g), t, g)
            assert float((got - ref).norm() / ref.norm()) < 1e-5, n


def test_ode_gauss_samples_the_zero_network_exactly_and_nested_with_two_steps():
    g16 = fd.Grid((16, 16))
    sde = fd.VPSDE(Q)
    st = _exact_stats(g16, C_DATA, _mean(g16), extrapolation="exponential")
    model = _zero_precond(st, sde, 7)
    xs = {}
    for n in (16, 32):
        g = fd.Grid((n, n))
        x, info = fd.sample(model, sde, g, 4000, sampler="ode_gauss", steps=2, time_grid="edm",
                            generator=torch.Generator().manual_seed(3), dtype=torch.float64, return_info=True)
        assert info["nfe"] == 4
        var = g.rfft(x - x.mean(0)).abs().square().mean((0, 1)) * g.volume
        target = st.eigenvalues(g)[0]
        big = target > 1e-3 * target.max()
        rel = (var[big] / target[big] - 1).abs()
        assert rel.mean() < 0.03 and rel.max() < 0.15, (n, float(rel.mean()), float(rel.max()))
        torch.testing.assert_close(x.mean(0)[0], st.mean_on(g)[0], atol=0.02, rtol=0)
        xs[n] = x
    # one seed, two grids: the coarse samples are the Fourier restriction of the fine ones
    torch.testing.assert_close(fd.resample(xs[32], fd.Grid((32, 32)), g16), xs[16], atol=1e-10, rtol=0)


def test_ode_gauss_refuses_a_model_without_a_gaussian_part():
    sde = fd.VPSDE(Q)
    with pytest.raises(ValueError, match="Gaussian part"):
        fd.sample(fd.GaussianScore(sde, C_DATA), sde, fd.Grid((8, 8)), 2, sampler="ode_gauss", steps=2)
    st = _exact_stats(fd.Grid((8, 8)), C_DATA, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="does not support sampler 'ode_gauss'"):
        fd.sample_coarse_to_fine(_zero_precond(st, sde, 3), sde, [fd.Grid((8, 8)), fd.Grid((16, 16))], [0.5], 2,
                                 sampler="ode_gauss", steps=4)


def test_uno_output_is_band_limited_and_float32_invariant():
    net = fd.UNOScore(1, 13, (8, 16, 16), 1)
    with torch.no_grad():
        net.conv_out.weight.normal_()
    x = torch.randn(2, 1, 112, 112)
    g = fd.Grid((112, 112))
    with torch.no_grad():
        out = net(x, torch.tensor([0.3, 0.8]), g)
        assert power_fraction_beyond(out, g, 13) < 1e-12
        g28 = fd.Grid((28, 28))
        ref = band_limit(fd.resample(out, g, g28), g28, 13)
        got = net(fd.resample(x, g, g28), torch.tensor([0.3, 0.8]), g28)
    assert float((got - ref).norm() / ref.norm()) < 1e-5


def test_position_features_break_translation_equivariance_only_when_asked():
    g = fd.Grid((28, 28))
    x = torch.randn(1, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3], dtype=torch.float64)
    for position in (False, True):
        torch.manual_seed(1)
        net = fd.UNOScore(1, 13, (8, 8, 8), 1, position=position).double()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))
            out, shifted = net(x, t, g), net(torch.roll(x, 4, -1), t, g)  # a shift by one pooling cell (4 points)
        err = float((torch.roll(out, 4, -1) - shifted).norm() / out.norm())
        assert (err > 1e-3) if position else (err < 1e-10), (position, err)
    assert fd.UNOScore(1, 13, position=True).spec["position"] is True


def test_preconditioner_rejects_mismatched_networks():
    st = _exact_stats(fd.Grid((16, 16)), C_DATA, torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="conditioning"):
        fd.SpectralPreconditioner(fd.UNOScore(1, 7, (8, 8, 8), 1, cond_channels=0), fd.VPSDE(Q), st)


# ------------------------------------------------------------------ loss pieces
def test_precond_weight_gives_the_gaussian_residual_unit_loss():
    g = fd.Grid((16, 16))
    sde = fd.VPSDE(Q)
    st = _exact_stats(g, C_DATA, torch.zeros(1, 16, 16))
    model = _zero_precond(st, sde, 7)
    x0 = C_DATA.sample(g, 4000, generator=torch.Generator().manual_seed(6)).double()
    for t in (0.02, 0.3, 0.9):
        loss = fd.dsm_loss(model, x0, sde, g, generator=torch.Generator().manual_seed(7), t=t, weighting="precond")
        assert abs(float(loss.mean()) - 1.0) < 0.05, (t, float(loss.mean()))
    with pytest.raises(ValueError, match="preconditioned"):
        fd.dsm_loss(fd.GaussianScore(sde, C_DATA), x0[:2], sde, g, t=0.5, weighting="precond")


def test_edm_time_sampling_is_log_normal_in_the_noise_level():
    sde = fd.VPSDE(Q)
    t = sample_time(20000, sde, torch.Generator().manual_seed(8), "edm", eps=1e-3)
    assert float(t.min()) >= 1e-3 - 1e-7 and float(t.max()) <= 1.0
    ls = noise_level(sde, t.double()).log()
    assert abs(float(ls.median()) + 1.2) < 0.03
    q16, q84 = torch.quantile(ls, torch.tensor([0.1587, 0.8413], dtype=torch.float64))
    assert abs(float(q84 - q16) / 2 - 1.2) < 0.05


def test_band_power_adds_up_to_the_mean_squared_norm():
    g = fd.Grid((32, 32))
    x = C_DATA.sample(g, 8, generator=torch.Generator().manual_seed(9))
    bp = band_power(x, g, [0, 4, 8, math.inf])
    total = float(g.inner(x, x).mean())
    assert abs(float(bp.sum()) - total) < 1e-6 * total
    assert power_fraction_beyond(fd.resample(x, g, fd.Grid((64, 64))), fd.Grid((64, 64)), 15) < 1e-12
