"""Score operators: discretisation invariance, time conditioning, specs and checkpoints."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import fsdiff as fd
from fsdiff.models import FNOScore, NeuralopFNOScore, SpectralConv, build_model, periodic_features


def _bandlimited(grid: fd.Grid, n: int, K: int = 4, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A smooth random function with modes |k_i| <= K, max |u| = 1, on ``grid``."""
    coarse = fd.Grid((2 * K + 1,) * grid.ndim)
    u = fd.Matern(alpha=2.0, tau=3.0).sample(coarse, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    u = fd.resample(u, coarse, grid)
    return u / u.abs().amax()


def _dense_reference(conv: SpectralConv, x: torch.Tensor) -> torch.Tensor:
    """Spectral conv by a full rfftn and an explicit loop over kept modes (independent of packing)."""
    spatial = x.shape[2:]
    g = fd.Grid(tuple(spatial))
    xh = torch.fft.rfftn(x, dim=g.spatial_dims, norm="forward")
    w = conv.neuralop_weight()  # centred (in, out, 2K_1+1, ..., K_d+1)
    out = torch.zeros(x.shape[0], conv.out_channels, *g.rfft_shape, dtype=xh.dtype)
    kept = [min(K, m) for K, m in zip(conv.modes, g.max_modes)]
    ks = torch.meshgrid(*[torch.arange(-k, k + 1) for k in kept[:-1]], torch.arange(kept[-1] + 1), indexing="ij")
    for idx in zip(*(k.reshape(-1).tolist() for k in ks)):
        src = tuple(k % n for k, n in zip(idx[:-1], spatial[:-1])) + (idx[-1],)
        wi = tuple(K + k for K, k in zip(conv.modes[:-1], idx[:-1])) + (idx[-1],)
        out[(slice(None), slice(None)) + src] = torch.einsum("bi,io->bo", xh[(slice(None), slice(None)) + src],
                                                           w[(slice(None), slice(None)) + wi])
    y = torch.fft.irfftn(out, s=tuple(spatial), dim=g.spatial_dims, norm="forward")
    return y if conv.bias is None else y + conv.bias.reshape(-1, *[1] * len(spatial))


# ------------------------------------------------------------------ spectral conv
@pytest.mark.parametrize("modes,shape", [((5, 4), (16, 16)), ((5, 4), (15, 9)), ((5, 4), (8, 7)), ((6,), (9,)),
                                         ((2, 3, 2), (7, 8, 6))])
def test_spectral_conv_matches_dense_reference(modes, shape):
    torch.manual_seed(0)
    conv = SpectralConv(3, 2, modes).double()
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    torch.testing.assert_close(conv(x), _dense_reference(conv, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("modes,shape", [((12, 12), (64, 64)), ((12, 12), (40, 26)), ((12, 12), (64, 65)),
                                         ((7,), (32,)), ((7,), (9,)), ((3, 4, 2), (8, 10, 6))])
def test_spectral_conv_equals_neuralop(modes, shape):
    from fsdiff.models.baseline import import_neuralop

    NSC = import_neuralop().layers.spectral_convolution.SpectralConv
    torch.manual_seed(0)
    ref = NSC(3, 4, n_modes=tuple(2 * K + 1 for K in modes))
    conv = SpectralConv(3, 4, modes).load_neuralop(ref)
    x = torch.randn(2, 3, *shape)
    torch.testing.assert_close(conv(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.neuralop_weight(), ref.weight.to_tensor().detach())


def test_spectral_conv_film_in_fourier_space():
    torch.manual_seed(0)
    conv = SpectralConv(3, 4, (5, 5)).double()
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    s, c = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(conv(x, scale=s, shift=c), s[..., None, None] * conv(x) + c[..., None, None])


def test_neuralop_import_keeps_warning_filters():
    from fsdiff.models.baseline import import_neuralop

    before = list(warnings.filters)
    import_neuralop()
    assert list(warnings.filters) == before


# ------------------------------------------------------------------ FNOScore
def test_discretisation_invariance_2d():
    torch.manual_seed(0)
    model = FNOScore(in_channels=1, width=16, modes=(8, 8), n_layers=3, positional="periodic").double()
    fine = fd.Grid((256, 256))
    u = _bandlimited(fine, 2)
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    with torch.no_grad():
        out_fine = model(u, t, fine)
        for n in (32, 64, 128):
            u_c, g_c = fd.subsample(u, fine, 256 // n)
            ref, _ = fd.subsample(out_fine, fine, 256 // n)
            rel = ((model(u_c, t, g_c) - ref).norm() / ref.norm()).item()
            assert rel < 1e-5, (n, rel)
    # the test can fail: a non-periodic ramp feature breaks invariance
    ramp = torch.linspace(0, 1, 257, dtype=torch.float64)[:-1].expand(2, 1, 256, 256)
    u_c, g_c = fd.subsample(u + 0.5 * ramp, fine, 8)
    ref, _ = fd.subsample(model(u + 0.5 * ramp, t, fine), fine, 8)
    assert ((model(u_c, t, g_c) - ref).norm() / ref.norm()).item() > 1e-4


def test_invariance_float32_and_fewer_modes_than_requested():
    torch.manual_seed(0)
    model = FNOScore(in_channels=2, width=8, modes=(12, 12), n_layers=2)
    fine = fd.Grid((128, 128))
    u = _bandlimited(fine, 1, K=3, dtype=torch.float32).expand(1, 2, 128, 128) * torch.tensor([1.0, -0.5])[:, None, None]
    t = torch.tensor([0.5])
    with torch.no_grad():
        out_fine = model(u, t, fine)
        u_c, g_c = fd.subsample(u, fine, 4)  # 32^2 has |k| <= 15: all 12 modes
        ref, _ = fd.subsample(out_fine, fine, 4)
        assert ((model(u_c, t, g_c) - ref).norm() / ref.norm()).item() < 1e-5
        tiny = model(*fd.subsample(u, fine, 16)[:1], t, fd.Grid((8, 8)))  # 8^2 keeps |k| <= 3 < 12
    assert tiny.shape == (1, 2, 8, 8) and torch.isfinite(tiny).all()


def test_per_sample_time_conditioning():
    torch.manual_seed(0)
    model = FNOScore(in_channels=1, width=8, modes=(4, 4), n_layers=2)
    g = fd.Grid((16, 16))
    x = torch.randn(3, 1, 16, 16)
    t = torch.tensor([0.05, 0.5, 0.95])
    with torch.no_grad():
        batched = model(x, t, g)
        single = torch.cat([model(x[i : i + 1], t[i : i + 1], g) for i in range(3)])
        same_x = model(x[:1].expand(3, 1, 16, 16), t, g)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    assert (same_x[0] - same_x[1]).abs().max() > 1e-3  # t changes the output
    torch.testing.assert_close(model(x, 0.5, g), model(x, torch.full((3,), 0.5), g))


def test_cond_channels_and_periodic_features():
    torch.manual_seed(0)
    model = FNOScore(in_channels=2, width=8, modes=(3, 3), n_layers=2, cond_channels=3, positional="periodic")
    g = fd.Grid((12, 10), length=(2.0, 1.0))
    x, c = torch.randn(2, 2, 12, 10), torch.randn(2, 3, 12, 10)
    out = model(x, torch.rand(2), g, cond=c)
    assert out.shape == x.shape
    t = torch.full((2,), 0.3)
    assert (model(x, t, g, cond=c) - model(x, t, g, cond=-c)).abs().max() > 1e-4
    pos = periodic_features(g)
    assert pos.shape == (4, 12, 10)
    torch.testing.assert_close(pos[1, :, 0], torch.cos(2 * torch.pi * torch.arange(12) / 12.0))  # L = 2: x/L = j/12
    with pytest.raises(ValueError, match="cond"):
        model(x, t, g)
    with pytest.raises(ValueError, match="cond"):
        model(x, t, g, cond=c[:, :2])


def test_1d_model():
    torch.manual_seed(0)
    model = FNOScore(in_channels=1, width=8, modes=6, n_layers=2, positional="periodic").double()
    fine = fd.Grid(256)
    u = _bandlimited(fine, 2, K=3)
    t = torch.tensor([0.1, 0.7], dtype=torch.float64)
    with torch.no_grad():
        out = model(u, t, fine)
        ref, _ = fd.subsample(out, fine, 8)
        coarse = model(*fd.subsample(u, fine, 8)[:1], t, fd.Grid(32))
    assert out.shape == (2, 1, 256)
    assert ((coarse - ref).norm() / ref.norm()).item() < 1e-5


def test_shape_errors():
    model = FNOScore(in_channels=2, width=4, modes=(3, 3), n_layers=1)
    g = fd.Grid((16, 16))
    with pytest.raises(ValueError, match="2-D"):
        model(torch.randn(1, 2, 16), torch.rand(1), fd.Grid(16))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, 2, 16, 8), torch.rand(1), g)
    with pytest.raises(ValueError, match=r"expected \(batch, 2, 16, 16\)"):
        model(torch.randn(1, 3, 16, 16), torch.rand(1), g)
    with pytest.raises(ValueError, match="t must"):
        model(torch.randn(2, 2, 16, 16), torch.rand(3), g)
    with pytest.raises(ValueError, match="cond_channels=0"):
        model(torch.randn(1, 2, 16, 16), torch.rand(1), g, cond=torch.randn(1, 1, 16, 16))
    with pytest.raises(TypeError):
        model(torch.randn(1, 2, 16, 16), torch.rand(1), (16, 16))
    with pytest.raises(ValueError, match="positional"):
        FNOScore(positional="grid")
    with pytest.raises(ValueError, match="in_channels"):
        FNOScore(in_channels=0)
    with pytest.raises(ValueError, match="modes"):
        FNOScore(modes=(1, 2, 3, 4))


# ------------------------------------------------------------------ specs, checkpoints, baseline
@pytest.mark.parametrize("kind", ["fno_score", "neuralop_fno"])
def test_spec_round_trip_and_checkpoint(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "fno_score":
        model = FNOScore(in_channels=2, width=8, modes=(4, 3), n_layers=2, cond_channels=1, positional="periodic")
    else:
        model = NeuralopFNOScore(in_channels=2, width=8, modes=(4, 3), n_layers=2, cond_channels=1)
    spec = model.spec
    assert spec["type"] == kind
    path = tmp_path / "ckpt.pt"
    torch.save({"spec": spec, "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    torch.manual_seed(1)  # a different init, overwritten by the state dict
    rebuilt = build_model(ckpt["spec"])
    rebuilt.load_state_dict(ckpt["state_dict"])
    g = fd.Grid((16, 14))
    x, c, t = torch.randn(2, 2, 16, 14), torch.randn(2, 1, 16, 14), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(model(x, t, g, cond=c), rebuilt(x, t, g, cond=c))
    assert rebuilt.spec == spec


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model type 'unet'"):
        build_model({"type": "unet"})
    with pytest.raises(ValueError, match="unknown model type None"):
        build_model({"width": 8})
    with pytest.raises(ValueError, match=r"bad key\(s\) \['depth'\]"):
        build_model({"type": "fno_score", "depth": 3})
    with pytest.raises(TypeError):
        build_model([("type", "fno_score")])


def test_neuralop_baseline_protocol_and_invariance():
    torch.manual_seed(0)
    model = NeuralopFNOScore(in_channels=1, width=8, modes=(6, 6), n_layers=2)  # float32 only (cfloat inside)
    fine = fd.Grid((128, 128))
    u = _bandlimited(fine, 2, K=3, dtype=torch.float32)
    t = torch.tensor([0.2, 0.8])
    with torch.no_grad():
        ref, _ = fd.subsample(model(u, t, fine), fine, 4)
        coarse = model(*fd.subsample(u, fine, 4)[:1], t, fd.Grid((32, 32)))
    assert ((coarse - ref).norm() / ref.norm()).item() < 1e-5
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(1, 2, 32, 32), torch.rand(1), fd.Grid((32, 32)))


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    model = FNOScore(in_channels=1, width=8, modes=(4, 4), n_layers=2)
    g = fd.Grid((16, 16))
    gen = torch.Generator().manual_seed(0)
    x, t, eta = torch.randn(8, 1, 16, 16, generator=gen), torch.rand(8, generator=gen), torch.randn(8, 1, 16, 16, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = (model(x, t, g) - eta).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    assert set(torch.load(buf, weights_only=True)) == set(model.state_dict())
