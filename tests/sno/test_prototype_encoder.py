"""The FNO encoder of class prototypes: shapes, the global code, grid invariance, errors, and its place in PrototypeScore."""

from __future__ import annotations

import pytest
import torch

import fsdiff as fd
from fsdiff.sno.latent import LATENT_GRID, LatentAutoencoder, LatentSNOConfig, PrototypeScore, load_few_shot, save_few_shot, train_latent_sno
from fsdiff.sno.prototype_encoder import PrototypeEncoder, build_prototype_encoder

pytestmark = pytest.mark.usefixtures("single_thread")


def _band_limited(*shape: int) -> torch.Tensor:
    z = torch.randn(*shape, 7, 14, dtype=torch.float64)
    return LATENT_GRID.irfft(LATENT_GRID.rfft(z) * LATENT_GRID.mode_mask)


def test_encoder_shapes_code_is_constant_and_spec_round_trips():
    torch.manual_seed(0)
    enc = PrototypeEncoder(2, width=8, n_layers=2, out_channels=3, code_dim=5)
    p = torch.randn(4, 2, 7, 14)
    torch.set_grad_enabled(False)
    try:
        _check_encoder(enc, p)
    finally:
        torch.set_grad_enabled(True)


def _check_encoder(enc: PrototypeEncoder, p: torch.Tensor) -> None:
    out = enc(p, LATENT_GRID)
    assert out.shape == (4, 8, 7, 14) and enc.out_dim == 8
    code = out[:, 3:]
    torch.testing.assert_close(code, code[..., :1, :1].expand_as(code))   # the global code is constant in space
    assert float((code[0] - code[1]).abs().max()) > 1e-4                  # ... and differs between prototypes
    again = build_prototype_encoder(enc.spec)
    again.load_state_dict(enc.state_dict())
    torch.testing.assert_close(again(p, LATENT_GRID), out)
    # the code is a function of the whole prototype: changing it in one corner changes the code everywhere
    q = p.clone()
    q[0, :, 0, 0] += 3.0
    assert float((enc(q, LATENT_GRID)[0, 3:, 6, 13] - code[0, :, 6, 13]).abs().max()) > 1e-5
    only_code = PrototypeEncoder(2, width=8, out_channels=0, code_dim=4)
    assert only_code(p, LATENT_GRID).shape == (4, 4, 7, 14)


def test_encoder_is_invariant_to_the_grid_the_prototype_is_evaluated_on():
    """The encoding of one band-limited prototype on refined grids, brought back to 7 x 14.

    Measured: 14 x 28 vs 56 x 112 differ by 9e-5, 28 x 56 by 4e-9 (relative); the native 7 x 14 grid by 3%
    (as for the score operator, its GELUs alias on a grid that barely resolves the modes)."""
    torch.manual_seed(1)
    enc = PrototypeEncoder(2, width=8, n_layers=2, out_channels=3, code_dim=5).double()
    p = _band_limited(2, 2)
    outs = {}
    for k in (2, 4, 8):
        g = fd.Grid((7 * k, 14 * k), (1.0, 2.0))
        with torch.no_grad():
            outs[k] = fd.resample(enc(fd.resample(p, LATENT_GRID, g), g), g, LATENT_GRID)
    ref = outs[8].norm()
    assert float((outs[2] - outs[8]).norm() / ref) < 1e-3
    assert float((outs[4] - outs[8]).norm() / ref) < 1e-6


def test_encoder_refuses_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        PrototypeEncoder(2, width=0)
    with pytest.raises(ValueError, match="out_channels \\+ code_dim >= 1"):
        PrototypeEncoder(2, out_channels=0, code_dim=0)
    with pytest.raises(ValueError, match="n_layers must be"):
        PrototypeEncoder(2, n_layers=True)
    enc = PrototypeEncoder(2, width=4)
    with pytest.raises(ValueError, match=r"expected \(batch, 2, 7, 14\)"):
        enc(torch.randn(1, 3, 7, 14), LATENT_GRID)
    with pytest.raises(ValueError, match=r"expected \(batch, 2, 7, 14\)"):
        enc(torch.randn(1, 2, 8, 14), LATENT_GRID)
    with pytest.raises(TypeError, match="fsdiff.Grid"):
        enc(torch.randn(1, 2, 7, 14), (7, 14))
    with pytest.raises(ValueError, match="not a prototype encoder spec"):
        build_prototype_encoder({"type": "fno_score"})


def test_prototype_score_with_an_encoder_trains_round_trips_and_checks_channels(tmp_path):
    from fsdiff.data.statistics import SpectralStatistics

    torch.manual_seed(0)
    bank = torch.randn(64, 2, 7, 14) * 0.5
    stats = SpectralStatistics(LATENT_GRID.shape, LATENT_GRID.length, 2).fit(bank)
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0))
    enc = PrototypeEncoder(2, width=8, n_layers=1, out_channels=3, code_dim=4)
    net = fd.FNOScore(in_channels=2, width=8, modes=(3, 6), n_layers=1, cond_channels=2 + 7, positional="periodic")
    model = PrototypeScore(net, sde, stats, centred=True, encoder=enc)
    x, t, proto = torch.randn(3, 2, 7, 14), torch.full((3,), 0.4), torch.randn(3, 2, 7, 14)
    seen = {}

    def spy(module, args, out):
        seen["cond"] = args[3]

    handle = model.inner.net.register_forward_hook(spy)
    model(x, t, LATENT_GRID, proto)
    handle.remove()
    assert seen["cond"].shape == (3, 9, 7, 14)   # Wiener estimate (2) + the prototype's encoding (3 + 4)
    torch.testing.assert_close(seen["cond"][:, 2:], enc(proto, LATENT_GRID))
    latents = {c: bank[c * 16:(c + 1) * 16] for c in range(4)}
    trained, losses = train_latent_sno(model, sde, latents, [0, 1, 2, 3],
                                       LatentSNOConfig(steps=3, batch_size=4, shots=(1, 5), weighting="precond"),
                                       torch.Generator().manual_seed(0))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert trained.spec["encoder"] == enc.spec
    _, again, _ = load_few_shot(save_few_shot(tmp_path / "p.pt", LatentAutoencoder(2, 4), trained, sde))
    torch.testing.assert_close(again(x, t, LATENT_GRID, proto), trained(x, t, LATENT_GRID, proto))
    with pytest.raises(ValueError, match="cond_channels = 9"):
        PrototypeScore(fd.FNOScore(in_channels=2, width=8, modes=(3, 6), n_layers=1, cond_channels=4), sde, stats, encoder=enc)
    with pytest.raises(ValueError, match="PrototypeEncoder of 2-channel"):
        PrototypeScore(net, sde, stats, encoder=PrototypeEncoder(3, width=4))
