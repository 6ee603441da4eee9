"""Support augmentation of double digits: closed-form deformations, the random draw, and its use in few-shot SNO."""

import math

import pytest
import torch

from fsdiff.sno.augment import SupportAugmentation, _centre_of_mass, deform_digits
from fsdiff.sno.latent import (LatentSNOConfig, augmented_latents, few_shot_sample, recommended_augmentation,
                               train_latent_sno)


def _identity(m: int) -> dict:
    return {"rotation": torch.zeros(m), "shear": torch.zeros(m), "scale": torch.ones(m, 2), "shift": torch.zeros(m, 2),
            "thickness": torch.zeros(m)}


def _blob(cy: float, cx: float, sy: float, sx: float) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    return torch.exp(-0.5 * (((y - cy) / sy) ** 2 + ((x - cx) / sx) ** 2))[None, None]


def _moments(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass (row, col) and standard deviations (row, col) in pixels of ``(1, 1, 28, 28)``."""
    y, x = torch.meshgrid(torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64), indexing="ij")
    m = img[0, 0].double() / img.double().sum()
    cy, cx = (m * y).sum(), (m * x).sum()
    return torch.stack([cy, cx]), torch.stack([((m * (y - cy) ** 2).sum()).sqrt(), ((m * (x - cx) ** 2).sum()).sqrt()])


def test_identity_deformation_and_strength_zero_return_the_image():
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(deform_digits(x, **_identity(3)), x, atol=1e-5, rtol=0)
    imgs = torch.rand(2, 1, 28, 56)
    torch.testing.assert_close(SupportAugmentation(strength=0)(imgs, torch.Generator().manual_seed(0)), imgs)


def test_quarter_turn_is_an_exact_pixel_rotation_about_the_centre_of_mass():
    # a pattern whose centre of mass is the grid centre (13.5, 13.5): a quarter turn maps pixel centres to pixel centres
    p = torch.zeros(1, 1, 28, 28)
    p[0, 0, 5, 13], p[0, 0, 22, 14] = 1.0, 1.0       # point-symmetric pair
    p[0, 0, 10, 11], p[0, 0, 17, 16] = 0.5, 0.5      # a second pair, off the axes
    p[0, 0, 13, 20], p[0, 0, 14, 7] = 0.25, 0.25
    prm = _identity(1) | {"rotation": torch.tensor([math.pi / 2])}
    out = deform_digits(p, **prm)
    # a positive angle turns the x axis (right) towards the y axis (down): clockwise on screen
    torch.testing.assert_close(out, torch.rot90(p, -1, (-2, -1)), atol=1e-5, rtol=0)


def test_scale_shear_and_shift_move_moments_as_the_affine_map_says():
    img = _blob(12.3, 15.1, 3.0, 2.5)
    c0, s0 = _moments(img)
    out = deform_digits(img, **(_identity(1) | {"scale": torch.tensor([[1.3, 0.8]])}))
    c1, s1 = _moments(out)
    torch.testing.assert_close(c1, c0, atol=0.02, rtol=0)                               # about the centre of mass
    # (row, col); bilinear resampling adds about 1/6 pixel^2 of variance
    torch.testing.assert_close(s1 / s0, torch.tensor([0.8, 1.3], dtype=torch.float64), atol=0.025, rtol=0)
    out = deform_digits(img, **(_identity(1) | {"shift": torch.tensor([[2.0, -1.0]])}))   # (x, y) pixels
    torch.testing.assert_close(_moments(out)[0] - c0, torch.tensor([-1.0, 2.0], dtype=torch.float64), atol=0.02, rtol=0)
    # shear x' = x + h y: the row-col covariance becomes h var(y)
    out = deform_digits(img, **(_identity(1) | {"shear": torch.tensor([0.4])}))
    y, x = torch.meshgrid(torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64), indexing="ij")
    m = out[0, 0].double() / out.double().sum()
    c = _moments(out)[0]
    cov = (m * (y - c[0]) * (x - c[1])).sum()
    assert abs(float(cov) - 0.4 * float(s0[0]) ** 2) < 0.05


def test_thickness_dilates_or_erodes_and_centre_of_mass_units():
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 6:22, 13:15] = 1.0  # a vertical stroke two pixels wide
    thick = deform_digits(img, **(_identity(1) | {"thickness": torch.tensor([1.0])}))
    thin = deform_digits(img, **(_identity(1) | {"thickness": torch.tensor([-1.0])}))
    assert float(thick.sum()) == pytest.approx(18 * 4)   # one pixel grown on every side
    assert float(thin.sum()) == pytest.approx(0, abs=1e-4)                       # a two-pixel stroke vanishes under a 3 x 3 erosion
    half = deform_digits(img, **(_identity(1) | {"thickness": torch.tensor([0.5])}))
    assert float(half.sum()) == pytest.approx(0.5 * (32 + 72))
    # centre of mass in grid_sample units: pixel j at (2 j + 1) / 28 - 1
    torch.testing.assert_close(_centre_of_mass(_blob(10.0, 20.0, 1.0, 1.0)),
                               torch.tensor([[41 / 28 - 1, 21 / 28 - 1]], dtype=torch.float64), atol=1e-6, rtol=0)


def test_random_draw_is_reproducible_per_digit_and_bounded():
    aug = SupportAugmentation(strength=1.0)
    imgs = torch.zeros(4, 1, 28, 56)
    imgs[:, 0, 6:22, 10:16] = 1.0
    imgs[:, 0, 6:22, 38:44] = 1.0
    a = aug(imgs, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, aug(imgs, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, aug(imgs, torch.Generator().manual_seed(4)))
    assert a.shape == imgs.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a[:, :, :, :28], a[:, :, :, 28:])   # the two digits are deformed independently
    for i in range(4):
        assert not torch.equal(a[0], a[i]) or i == 0
    # the centre of mass of each digit stays put (no shift by default)
    for half in (slice(0, 28), slice(28, 56)):
        torch.testing.assert_close(_centre_of_mass(a[..., half]), _centre_of_mass(imgs[..., half]), atol=0.02, rtol=0)


def test_augmentation_settings_are_checked_and_round_trip():
    for bad in ({"strength": -1}, {"rotation_deg": float("nan")}, {"thickness": 1.5}, {"shear": True}):
        with pytest.raises(ValueError, match="SupportAugmentation"):
            SupportAugmentation(**bad)
    with pytest.raises(ValueError, match="unknown SupportAugmentation fields"):
        SupportAugmentation.from_dict({"strength": 1.0, "elastic": 2.0})
    aug = SupportAugmentation(strength=0.5, rotation_deg=12.0)
    assert SupportAugmentation.from_dict(aug.to_dict()) == aug
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 56\)"):
        aug(torch.rand(2, 1, 28, 28), torch.Generator())
    assert recommended_augmentation({}, 1) is None
    assert recommended_augmentation({"sampling": {"support_augmentation": aug.to_dict()}}, 50) == aug
    by_shots = {"sampling": {"support_augmentation": [aug.to_dict() | {"max_shots": 4}, {"strength": 0.0}]}}
    assert [recommended_augmentation(by_shots, k) for k in (1, 4, 5, 50)] == [aug, aug, None, None]
    assert recommended_augmentation({"sampling": {"support_augmentation": [aug.to_dict() | {"max_shots": 1}]}}, 2) is None
    with pytest.raises(ValueError, match="shots must be"):
        recommended_augmentation(by_shots, 0)


def test_augmented_training_and_sampling_condition_each_sample_on_its_own_deformed_support(tmp_path):
    import fsdiff as fd
    from test_latent import _tiny

    ae, sno, sde, _ = _tiny(tmp_path)
    fresh = fd.FNOScore(in_channels=2, width=8, modes=(3, 6), n_layers=1, cond_channels=2, positional="periodic")
    imgs = torch.rand(12, 1, 28, 56)
    labels = torch.tensor([1, 2, 3]).repeat_interleave(4)
    bank = augmented_latents(ae, imgs, labels, SupportAugmentation(), 2, torch.Generator().manual_seed(0))
    assert set(bank) == {1, 2, 3} and bank[1].shape == (2, 4, 2, 7, 14)
    latents = {c: torch.randn(4, 2, 7, 14) for c in (1, 2, 3)}
    cfg = LatentSNOConfig(steps=3, batch_size=4, shots=(1, 3))
    _, losses = train_latent_sno(fresh, sde, latents, [1, 2, 3], cfg, torch.Generator().manual_seed(0), support_latents=bank)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    with pytest.raises(ValueError, match="support_latents must hold"):
        train_latent_sno(fresh, sde, latents, [1, 2, 3], cfg, torch.Generator(), support_latents={1: bank[1]})
    with pytest.raises(ValueError, match="copies must be"):
        augmented_latents(ae, imgs, labels, SupportAugmentation(), 0, torch.Generator())

    support = torch.zeros(1, 1, 28, 56)
    support[0, 0, 6:22, 10:16] = 1.0
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, grid, cond):
            seen.append(cond.clone())
            return sno(x, t, grid, cond)

    x = few_shot_sample(Spy(), ae, sde, support, 3, generator=torch.Generator().manual_seed(0), steps=2,
                        augment=SupportAugmentation())
    assert x.shape == (3, 1, 28, 56) and torch.isfinite(x).all()
    assert seen[0].shape[0] == 3 and not torch.allclose(seen[0][0], seen[0][1])   # one prototype per sample
    assert all(torch.equal(c, seen[0]) for c in seen)                             # fixed along the trajectory
    plain = few_shot_sample(sno, ae, sde, support, 3, generator=torch.Generator().manual_seed(0), steps=2,
                            augment=SupportAugmentation(strength=0))
    assert plain.shape == x.shape
    torch.testing.assert_close(plain, few_shot_sample(sno, ae, sde, support, 3, generator=torch.Generator().manual_seed(0),
                                                      steps=2))   # strength 0 is exactly the unaugmented sampler
    with pytest.raises(ValueError, match="generator"):
        few_shot_sample(sno, ae, sde, support, 3, steps=2, augment=SupportAugmentation())
    with pytest.raises(TypeError, match="SupportAugmentation"):
        few_shot_sample(sno, ae, sde, support, 3, generator=torch.Generator(), steps=2, augment={"strength": 1.0})
