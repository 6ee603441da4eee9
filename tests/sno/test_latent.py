"""The SNO image task: double-digit data set, latent autoencoder, prototype training, few-shot sampling, errors."""

from __future__ import annotations

import pytest
import torch

import fsdiff as fd
from fsdiff.data import CLASS_NAMES, DOUBLE_GRID, DoubleDigits, dataset_from_dict, held_out_classes
from fsdiff.errors import CheckpointError
from fsdiff.sno.latent import (LATENT_GRID, LatentAutoencoder, LatentSNOConfig, build_autoencoder, encode_by_class,
                               few_shot_sample, load_few_shot, prototype, save_few_shot, train_latent_sno)

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.usefixtures("data_env")]


def test_classes_and_held_out_split():
    assert len(CLASS_NAMES) == 100 and CLASS_NAMES[0] == "00" and CLASS_NAMES[57] == "57"
    held = held_out_classes(0)
    assert len(held) == 20 and held == held_out_classes(0) and held != held_out_classes(1)
    train = [k for k in range(100) if k not in held]
    for h in held:  # each digit of an unseen class is seen in training in the same position
        assert any(k // 10 == h // 10 for k in train) and any(k % 10 == h % 10 for k in train)
    d = DoubleDigits("train", classes="held_out")
    assert d.classes == held and len(DoubleDigits("train").classes) == 80
    # a validation split of the training classes keeps the same property within them
    val = held_out_classes(1, 10, among=train)
    rest = [k for k in train if k not in val]
    assert len(val) == 10 and not set(val) & set(held) and val == held_out_classes(1, 10, among=train)
    assert all(any(k // 10 == v // 10 for k in rest) and any(k % 10 == v % 10 for k in rest) for v in val)
    with pytest.raises(ValueError, match="held-out classes"):
        held_out_classes(0, 6, among=range(10))


def test_images_labels_determinism_nesting_and_splits():
    d = DoubleDigits("train", classes="all")
    x, y = d.sample_with_labels(DOUBLE_GRID, 8, torch.Generator().manual_seed(3))
    x2, y2 = d.sample_with_labels(DOUBLE_GRID, 8, torch.Generator().manual_seed(3))
    assert x.shape == (8, 1, 28, 56) and torch.equal(x, x2) and torch.equal(y, y2)
    fine = fd.Grid((56, 112), (1.0, 2.0))
    xf, yf = d.sample_with_labels(fine, 8, torch.Generator().manual_seed(3))
    assert torch.equal(yf, y)
    torch.testing.assert_close(fd.resample(xf.double(), fine, DOUBLE_GRID), x.double(), rtol=0, atol=1e-5)
    xt = DoubleDigits("test", classes="all").render(y, DOUBLE_GRID, torch.Generator().manual_seed(3))
    assert not torch.allclose(xt, x)  # the test split's images, not the train split's
    assert dataset_from_dict(d.to_dict()).classes == d.classes
    with pytest.raises(ValueError, match="0..99"):
        DoubleDigits(classes=[100])
    with pytest.raises(ValueError, match="classes must be"):
        DoubleDigits(classes="unseen")
    with pytest.raises(ValueError, match=r"\[0, 1\) x \[0, 2\)"):
        d.sample(fd.Grid((28, 28)), 2)


def test_autoencoder_shapes_round_trip_and_errors():
    torch.manual_seed(0)
    ae = LatentAutoencoder(latent_channels=4, width=4)
    x = DoubleDigits("test", classes="all").sample(DOUBLE_GRID, 3, torch.Generator().manual_seed(0))
    z = ae.encode(x)
    assert z.shape == (3, 4, *LATENT_GRID.shape) and ae.decode(z).shape == (3, 1, 28, 56)
    ae2 = build_autoencoder(ae.spec)
    ae2.load_state_dict(ae.state_dict())
    torch.testing.assert_close(ae2.decode(ae2.encode(x)), ae.decode(z))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 56\)"):
        ae.encode(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="support latents"):
        prototype(torch.zeros(0, 4, 7, 14))


def test_band_limited_latents_have_no_nyquist_column_and_old_specs_stay_unprojected():
    torch.manual_seed(0)
    ae = LatentAutoencoder(latent_channels=2, width=4)
    x = DoubleDigits("test", classes="all").sample(DOUBLE_GRID, 2, torch.Generator().manual_seed(0))
    z_hat = torch.fft.rfft2(ae.encode(x))
    assert ae.band_limited and z_hat[..., -1].abs().max() < 1e-5   # the 14-point axis's mode 7 is gone
    assert z_hat[..., -2].abs().max() > 1e-3                           # mode 6 is kept
    raw = ae.encoder(x)   # the projection removes the Nyquist column and nothing else
    torch.testing.assert_close(torch.fft.rfft2(raw)[..., :-1], z_hat[..., :-1], atol=1e-4, rtol=1e-4)
    old = {k: v for k, v in ae.spec.items() if k != "band_limited"}   # written before band_limited existed
    assert build_autoencoder(old).band_limited is False and build_autoencoder(ae.spec).band_limited is True
    with pytest.raises(ValueError, match="band_limited"):
        LatentAutoencoder(band_limited=1)


def _tiny(tmp_path):
    torch.manual_seed(0)
    ae = LatentAutoencoder(latent_channels=2, width=4)
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0))
    model = fd.FNOScore(in_channels=2, width=8, modes=(3, 6), n_layers=1, cond_channels=2, positional="periodic")
    latents = {c: torch.randn(8, 2, 7, 14) for c in (1, 2, 3)}
    sno, losses = train_latent_sno(model, sde, latents, [1, 2, 3], LatentSNOConfig(steps=5, batch_size=4, shots=(1, 5)),
                                   torch.Generator().manual_seed(0))
    return ae, sno, sde, losses


def test_prototype_path_trains_and_few_shot_sampling_runs(tmp_path):
    ae, sno, sde, losses = _tiny(tmp_path)
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    support = torch.rand(2, 1, 28, 56)
    x = few_shot_sample(sno, ae, sde, support, 3, generator=torch.Generator().manual_seed(0), steps=2)
    assert x.shape == (3, 1, 28, 56) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="support must be"):
        few_shot_sample(sno, ae, sde, torch.rand(2, 1, 28, 28), 3)
    with pytest.raises(ValueError, match="support must be"):
        few_shot_sample(sno, ae, sde, torch.rand(0, 1, 28, 56), 3)
    with pytest.raises(ValueError, match="fewer than 6 latents"):
        train_latent_sno(sno, sde, {1: torch.randn(3, 2, 7, 14)}, [1], LatentSNOConfig(steps=1, shots=(5,)),
                         torch.Generator().manual_seed(0))
    path = save_few_shot(tmp_path / "fs.pt", ae, sno, sde, step=5)
    ae2, sno2, sde2 = load_few_shot(path)
    z = torch.randn(2, 2, 7, 14)
    torch.testing.assert_close(ae2.decode(z), ae.decode(z))
    bad = torch.load(path, weights_only=True)
    bad["autoencoder"]["spec"]["width"] = 8  # a mismatched checkpoint
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_few_shot(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a few-shot"):
        load_few_shot(fd._paths.PRETRAINED_DIR / "mnist.pt")


def test_latent_score_operator_is_invariant_to_the_latent_grid():
    """The conditioned FNOScore on one latent and prototype, evaluated on refined latent grids.

    Measured: 14 x 28 vs 56 x 112 differ by 2e-4, 28 x 56 by 2e-9 (relative); the native 7 x 14 grid by 8%
    (its pointwise non-linearities alias: the grid barely resolves the latent's modes).
    """
    _, sno, _, _ = _tiny(None)
    sno = sno.double()
    x = LATENT_GRID.irfft(LATENT_GRID.rfft(torch.randn(2, 2, 7, 14, dtype=torch.float64)) * LATENT_GRID.mode_mask)
    c = LATENT_GRID.irfft(LATENT_GRID.rfft(torch.randn(2, 2, 7, 14, dtype=torch.float64)) * LATENT_GRID.mode_mask)
    t = torch.full((2,), 0.4, dtype=torch.float64)
    outs = {}
    for k in (2, 4, 8):
        g = fd.Grid((7 * k, 14 * k), (1.0, 2.0))
        with torch.no_grad():
            outs[k] = fd.resample(sno(fd.resample(x, LATENT_GRID, g), t, g, fd.resample(c, LATENT_GRID, g)), g, LATENT_GRID)
    ref = outs[8].norm()
    assert float((outs[2] - outs[8]).norm() / ref) < 2e-3
    assert float((outs[4] - outs[8]).norm() / ref) < 1e-6


def test_sno_sample_command(tmp_path, capsys):
    import matplotlib.image as mpimg
    import numpy as np
    import xarray as xr

    from fsdiff.app.cli import main

    ae, sno, sde, _ = _tiny(tmp_path)
    ck = save_few_shot(tmp_path / "fs.pt", ae, sno, sde, step=5)
    for i in range(2):
        mpimg.imsave(tmp_path / f"s{i}.png", np.random.default_rng(i).random((28, 56)), cmap="gray", vmin=0, vmax=1)
    out = tmp_path / "gen.nc"
    assert main(["sno-sample", str(ck), "--support", str(tmp_path / "s0.png"), str(tmp_path / "s1.png"), "--n", "3",
                 "--steps", "2", "--guidance", "2", "--out", str(out), "--quiet"]) == 0
    assert xr.open_dataset(out)["samples"].shape == (3, 1, 28, 56) and out.with_suffix(".png").exists()
    assert xr.open_dataset(out)["samples"].attrs["guidance"] == 2.0
    assert list(xr.open_dataset(out)["samples"].attrs["guidance_interval"]) == [0.0, 1.0]
    assert main(["sno-sample", str(ck), "--support", str(tmp_path / "s0.png"), "--n", "2", "--steps", "2",
                 "--guidance", "2", "--guidance-interval", "0.2", "0.7", "--out", str(out), "--quiet"]) == 0
    assert list(xr.open_dataset(out)["samples"].attrs["guidance_interval"]) == [0.2, 0.7]
    assert xr.open_dataset(out)["samples"].attrs["support_augmentation"] == 0.0
    assert main(["sno-sample", str(ck), "--support", str(tmp_path / "s0.png"), "--n", "2", "--steps", "2",
                 "--augment", "0.5", "--out", str(out), "--quiet"]) == 0
    assert xr.open_dataset(out)["samples"].attrs["support_augmentation"] == 0.5
    capsys.readouterr()
    assert main(["sno-sample", str(ck), "--support", str(tmp_path / "s0.png"), "--augment", "-1",
                 "--out", str(tmp_path / "neg.nc")]) == 2
    assert "strength must be" in capsys.readouterr().err and not (tmp_path / "neg.nc").exists()
    mpimg.imsave(tmp_path / "small.png", np.zeros((28, 28)), cmap="gray")
    capsys.readouterr()
    assert main(["sno-sample", str(ck), "--support", str(tmp_path / "small.png"), "--out", str(tmp_path / "x.nc")]) == 2
    assert "must be 28 x 56" in capsys.readouterr().err and not (tmp_path / "x.nc").exists()


def test_prototype_score_is_the_gaussian_posterior_when_untrained_and_round_trips(tmp_path):
    """Inside the spectral preconditioner, a zero residual gives the latent bank's Gaussian posterior exactly."""
    from fsdiff.data.statistics import SpectralStatistics
    from fsdiff.sno.latent import PrototypeScore

    torch.manual_seed(0)
    bank = torch.randn(64, 2, 7, 14) * 0.5 + 0.1
    stats = SpectralStatistics(LATENT_GRID.shape, LATENT_GRID.length, 2).fit(bank)
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0))
    net = fd.FNOScore(in_channels=2, width=8, modes=(3, 6), n_layers=1, cond_channels=4, positional="periodic")
    model = PrototypeScore(net, sde, stats)
    x, t, proto = torch.randn(3, 2, 7, 14), torch.full((3,), 0.4), torch.randn(3, 2, 7, 14)
    eta_g = model.pre.gaussian_parts(x, t, LATENT_GRID)[0]

    class Zero(torch.nn.Module):
        def forward(self, x, t, grid, cond):
            assert cond.shape[1] == 4  # the Wiener estimate and the prototype
            return torch.zeros_like(x)

    real_net, model.inner.net = model.inner.net, Zero()
    torch.testing.assert_close(model(x, t, LATENT_GRID, proto).double(), eta_g.double(), rtol=1e-6, atol=1e-6)
    model.inner.net = real_net
    latents = {c: bank[c * 16:(c + 1) * 16] for c in range(4)}
    trained, losses = train_latent_sno(model, sde, latents, [0, 1, 2, 3],
                                       LatentSNOConfig(steps=3, batch_size=4, shots=(1, 5), weighting="precond"),
                                       torch.Generator().manual_seed(0))
    assert all(torch.isfinite(torch.tensor(losses)))
    ae = LatentAutoencoder(latent_channels=2, width=4)
    _, again, _ = load_few_shot(save_few_shot(tmp_path / "p.pt", ae, trained, sde))
    torch.testing.assert_close(again(x, t, LATENT_GRID, proto), trained(x, t, LATENT_GRID, proto))
    from fsdiff.sno.latent import build_prototype_score

    old_spec = {k: v for k, v in trained.spec.items() if k != "encoder"}   # checkpoints before the prototype encoder
    assert build_prototype_score(old_spec).inner.encoder is None
    with pytest.raises(ValueError, match="cond_channels = 4"):
        PrototypeScore(fd.FNOScore(in_channels=2, width=8, modes=(3, 6), n_layers=1, cond_channels=2), sde, stats)


def test_centred_prototype_score_is_the_gaussian_around_the_prototype(tmp_path):
    """``centred=True``: the Gaussian part is N(prototype + mu, c) exactly, so moving the prototype by d
    and x_t by m(t) d leaves it unchanged; residual_scale interpolates the network's part; it round-trips."""
    from fsdiff.data.statistics import SpectralStatistics
    from fsdiff.sno.latent import PrototypeScore, residual_statistics

    torch.manual_seed(0)
    bank = torch.randn(64, 2, 7, 14) * 0.5 + 0.1
    latents = {c: bank[c * 16:(c + 1) * 16] for c in range(4)}
    stats = residual_statistics(latents, [0, 1, 2, 3], (1, 5), 256, torch.Generator().manual_seed(0))
    assert isinstance(stats, SpectralStatistics) and stats.channels == 2
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0))
    net = fd.FNOScore(in_channels=2, width=8, modes=(3, 6), n_layers=1, cond_channels=4, positional="periodic")
    model = PrototypeScore(net, sde, stats, centred=True)
    gen = torch.Generator().manual_seed(1)
    x, proto, d = (torch.randn(3, 2, 7, 14, generator=gen) for _ in range(3))
    t = torch.full((3,), 0.4)
    m = float(sde.mean_scale(torch.tensor(0.4, dtype=torch.float64)))
    with torch.no_grad():
        base = model(x, t, LATENT_GRID, proto)
        gauss = model(x, t, LATENT_GRID, proto, residual_scale=0.0)
        torch.testing.assert_close(model(x + m * d, t, LATENT_GRID, proto + d, residual_scale=0.0), gauss,
                                   rtol=1e-4, atol=1e-5)
        assert not torch.allclose(gauss, model(x, t, LATENT_GRID, proto + d, residual_scale=0.0), atol=1e-3)
        # the Gaussian part is the posterior of a Gaussian centred on the prototype: shift x_t by m * proto
        shifted = model.pre.gaussian_parts(x - m * proto, t, LATENT_GRID)[0]
        torch.testing.assert_close(gauss.double(), shifted.double(), rtol=1e-6, atol=1e-6)
        half = model(x, t, LATENT_GRID, proto, residual_scale=0.5)
        torch.testing.assert_close(half, 0.5 * (gauss + base), rtol=1e-4, atol=1e-5)
    _, again, _ = load_few_shot(save_few_shot(tmp_path / "c.pt", LatentAutoencoder(2, 4), model, sde))
    assert again.centred
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, LATENT_GRID, proto), base)


def test_shipped_few_shot_model_loads_and_samples_with_its_guidance():
    from fsdiff._paths import PRETRAINED_DIR
    from fsdiff.sno.latent import few_shot_sample, load_few_shot, recommended_augmentation, recommended_guidance

    import json

    from fsdiff._paths import REPO_ROOT

    path = PRETRAINED_DIR / "sno_double_digits.pt"
    ae, sno, sde, config = load_few_shot(path, with_config=True)
    # its sampling block is the guidance study's committed recommendation (written by ship_sno_sampling.py)
    study = json.loads((REPO_ROOT / "resolution_studies" / "results" / "sno_mnist2_guidance" / "results.json").read_text())
    assert {k: v for k, v in config["sampling"].items() if k != "note"} == study["recommendation"]
    assert recommended_guidance(config) == study["recommendation"]["guidance"] > 1
    assert config["study"]["encoder_width"] > 0 and sno.spec["encoder"]["type"] == "prototype_encoder"
    support = torch.rand(1, 1, 28, 56, generator=torch.Generator().manual_seed(0))
    x = few_shot_sample(sno, ae, sde, support, 2, generator=torch.Generator().manual_seed(1), steps=2, guidance=3.0,
                        augment=recommended_augmentation(config, 5))
    assert x.shape == (2, 1, 28, 56) and torch.isfinite(x).all()


def test_guidance_must_be_a_non_negative_number(tmp_path):
    from fsdiff.sno.latent import few_shot_sample, load_few_shot, recommended_guidance

    ae, sno, sde, _ = _tiny(tmp_path)
    config = load_few_shot(save_few_shot(tmp_path / "fs.pt", ae, sno, sde), with_config=True)[3]
    assert recommended_guidance(config) == 1.0  # nothing recorded: no guidance
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
            few_shot_sample(sno, ae, sde, torch.rand(1, 1, 28, 56), 1, steps=1, guidance=bad)
    with pytest.raises(ValueError, match="guidance_interval"):
        few_shot_sample(sno, ae, sde, torch.rand(1, 1, 28, 56), 1, steps=1, guidance=2, guidance_interval=(0.5, 0.2))


def test_guidance_interval_guides_only_inside_it(tmp_path):
    from fsdiff.sno.latent import recommended_guidance_interval

    ae, sno, sde, _ = _tiny(tmp_path)
    support = torch.rand(1, 1, 28, 56, generator=torch.Generator().manual_seed(0))

    def draw(**kw):
        return few_shot_sample(sno, ae, sde, support, 3, generator=torch.Generator().manual_seed(1), steps=3, **kw)

    plain, guided = draw(), draw(guidance=3.0)
    assert not torch.allclose(plain, guided)
    torch.testing.assert_close(draw(guidance=3.0, guidance_interval=(0.0, 1.0)), guided, rtol=0, atol=0)
    torch.testing.assert_close(draw(guidance=3.0, guidance_interval=(5.0, 6.0)), plain, rtol=0, atol=0)  # never inside
    partial = draw(guidance=3.0, guidance_interval=(0.3, 1.0))
    assert not torch.allclose(partial, plain) and not torch.allclose(partial, guided)
    assert recommended_guidance_interval({}) is None
    assert recommended_guidance_interval({"sampling": {"guidance_interval": [0.2, 0.7]}}) == (0.2, 0.7)


def test_prototype_noise_blurs_training_prototypes_by_one_over_root_k():
    from fsdiff.sno.latent import _draw_batch

    g = torch.Generator().manual_seed(0)
    latents = {3: torch.randn(60, 2, *LATENT_GRID.shape, generator=g), 7: torch.randn(60, 2, *LATENT_GRID.shape, generator=g)}
    for k in (1, 4):
        clean = LatentSNOConfig(batch_size=256, shots=(k,))
        noisy = LatentSNOConfig(batch_size=256, shots=(k,), prototype_noise=0.5)
        _, c0 = _draw_batch(latents, [3, 7], clean, torch.Generator().manual_seed(1))
        _, c1 = _draw_batch(latents, [3, 7], noisy, torch.Generator().manual_seed(1))
        # unit-variance latents: a K-shot prototype has variance 1/K, plus (0.5)^2/K of added noise
        assert abs(float(c0.var()) * k - 1.0) < 0.05 and abs(float(c1.var()) * k - 1.25) < 0.06, (k, c0.var(), c1.var())


def test_guided_is_the_classifier_free_combination_and_skips_the_null_outside_its_interval():
    from fsdiff.sno.latent import guided

    calls = []

    def cond(x, t, g):
        return torch.full_like(x, 2.0)

    def null(x, t, g):
        calls.append(1)
        return torch.full_like(x, 0.5)

    x = torch.zeros(3, 1, 7, 14)
    torch.testing.assert_close(guided(cond, null, 4.0)(x, 0.3, None), torch.full_like(x, 0.5 + 4.0 * 1.5))
    assert guided(cond, null, 1.0)(x, 0.3, None).eq(2.0).all() and len(calls) == 1   # w = 1: the null is not evaluated
    t = torch.tensor([0.1, 0.5, 0.9])
    out = guided(cond, null, 4.0, (0.4, 0.6))(x, t, None)
    assert out[0].eq(2.0).all() and out[2].eq(2.0).all() and out[1].eq(6.5).all()   # guided only inside [0.4, 0.6]
    assert guided(cond, null, 4.0, (0.4, 0.6))(x, 0.9, None).eq(2.0).all() and len(calls) == 2
