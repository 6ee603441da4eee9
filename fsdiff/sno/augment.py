"""Random small deformations of double-digit support images: the few-shot SNO's support augmentation.

From one support image the latent SNO's prototype fixes the digits' slant, size, position and
stroke, and the samples stay near that one image (the K = 1 memorisation of issue 14). A real
image of the class differs from the support by just those nuisances. :class:`SupportAugmentation`
draws them: each digit (each 28 x 28 half, independently) is rotated, sheared, scaled (shifted
only if asked), and its strokes thickened or thinned. :func:`~fsdiff.sno.latent.few_shot_sample` then conditions
every generated image on the prototype of its *own* deformed copy of the supports, so each sample
starts from a plausible other writing of the same digits. The model should have seen deformed
supports in training (:func:`~fsdiff.sno.latent.augmented_latents`); otherwise it turns them into
messier digits (``resolution_studies/results/sno_mnist2_guidance_test_time_aug``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["SupportAugmentation", "deform_digits"]

_HALF = 28  # each digit is a 28 x 28 half of the 28 x 56 image


@dataclass(frozen=True)
class SupportAugmentation:
    """Per-digit random affine deformation and stroke change, all ranges scaled by ``strength``.

    Each range is the half-width of a uniform draw: ``rotation_deg`` (degrees), ``shear`` (x shift per
    unit y), ``log_scale`` (natural log of the size factor, per axis), ``shift_px`` (pixels, per
    axis; 0 by default, since MNIST digits are centred by their centre of mass, which the other
    deformations keep in place), ``thickness`` (in [0, 1]: the blend towards a 3 x 3 dilation, or for negative draws an
    erosion). ``strength = 0`` is the identity.
    """

    strength: float = 1.0
    rotation_deg: float = 10.0
    shear: float = 0.15
    log_scale: float = 0.1
    shift_px: float = 0.0
    thickness: float = 0.4

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"SupportAugmentation.{f.name} must be a finite number >= 0; got {v!r}")
        if self.thickness > 1:
            raise ValueError(f"SupportAugmentation.thickness must lie in [0, 1]; got {self.thickness!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SupportAugmentation":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SupportAugmentation fields {sorted(unknown)}; expected {[f.name for f in fields(cls)]}")
        return cls(**d)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``images (N, 1, 28, 56)`` in [0, 1] -> ``(N, 1, 28, 56)``, each digit deformed independently."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, _HALF, 2 * _HALF):
            raise ValueError(f"images must be (N, 1, 28, 56) double digits; got {tuple(images.shape)}")
        if self.strength == 0:
            return images.clone()
        n = images.shape[0]
        digits = torch.cat([images[..., :_HALF], images[..., _HALF:]], 0)  # (2N, 1, 28, 28): lefts, then rights
        u = 2 * torch.rand(2 * n, 7, generator=generator, dtype=torch.float64) - 1  # uniform on [-1, 1]
        a = self.strength
        out = deform_digits(digits, rotation=math.radians(a * self.rotation_deg) * u[:, 0], shear=a * self.shear * u[:, 1],
                            scale=torch.exp(a * self.log_scale * u[:, 2:4]), shift=a * self.shift_px * u[:, 4:6],
                            thickness=(a * self.thickness * u[:, 6]).clamp(-1, 1))
        return torch.cat([out[:n], out[n:]], -1).clamp(0, 1)


def deform_digits(digits: torch.Tensor, rotation: torch.Tensor, shear: torch.Tensor, scale: torch.Tensor,
                  shift: torch.Tensor, thickness: torch.Tensor) -> torch.Tensor:
    """Deform ``digits (M, 1, 28, 28)``, each about its centre of mass: ``(M, 1, 28, 28)``.

    The digit's points move by ``x' = R(rotation) S(shear) diag(scale) (x - c) + c + shift``
    (``rotation (M,)`` radians, positive turning the x axis (right) towards the y axis (down), i.e.
    clockwise on screen; ``shear (M,)``,
    ``scale (M, 2)`` for ``(x, y)``, ``shift (M, 2)`` pixels), sampled bilinearly; then the strokes
    are blended towards their 3 x 3 dilation by ``thickness (M,)`` in [0, 1], or towards their erosion
    by ``-thickness``.
    """
    m_ = digits.shape[0]
    f64 = dict(dtype=torch.float64)
    rotation, shear, thickness = (torch.as_tensor(v, **f64).reshape(m_) for v in (rotation, shear, thickness))
    scale, shift = (torch.as_tensor(v, **f64).reshape(m_, 2) for v in (scale, shift))
    c, s = torch.cos(rotation), torch.sin(rotation)
    sx, sy = scale[:, 0], scale[:, 1]
    m = torch.stack([torch.stack([c * sx, (c * shear - s) * sy], -1),
                     torch.stack([s * sx, (s * shear + c) * sy], -1)], -2)  # (M, 2, 2), grid_sample's [-1, 1] units
    centre = _centre_of_mass(digits)
    b = (2 / _HALF) * shift
    inv = torch.linalg.inv(m)
    offset = centre - (inv @ (centre + b)[..., None])[..., 0]
    theta = torch.cat([inv, offset[..., None]], -1).to(digits.dtype)  # output point -> input point
    grid = F.affine_grid(theta, list(digits.shape), align_corners=False)
    out = F.grid_sample(digits, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    w = thickness.to(digits.dtype).view(-1, 1, 1, 1)
    dilated, eroded = F.max_pool2d(out, 3, 1, 1), -F.max_pool2d(-out, 3, 1, 1)
    return out + w.clamp(min=0) * (dilated - out) + (-w).clamp(min=0) * (eroded - out)


def _centre_of_mass(digits: torch.Tensor) -> torch.Tensor:
    """``(M, 1, 28, 28) -> (M, 2)``: each image's centre of mass ``(x, y)`` in grid_sample's ``[-1, 1]`` units
    (pixel centres at ``(2 i + 1) / 28 - 1``; the centre for a blank image)."""
    pos = (2 * torch.arange(_HALF, dtype=torch.float64) + 1) / _HALF - 1
    mass = digits[:, 0].double().clamp(min=0)
    total = mass.sum((1, 2)).clamp(min=1e-12)
    return torch.stack([(mass.sum(1) * pos).sum(1) / total, (mass.sum(2) * pos).sum(1) / total], -1)
