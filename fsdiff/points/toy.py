"""Toy point data sets in R^2 (and a 6-D embedded swiss roll), drawn from a passed generator.

All return float tensors ``(n, d)`` roughly standardised (unit scale, centred), so one set of
hyper-parameters serves all of them. Names: :data:`TOY_SETS` maps a name to its sampler
``f(n, generator) -> (n, d)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import positive_int

__all__ = [
    "swiss_roll",
    "eight_gaussians",
    "checkerboard",
    "moons",
    "swiss_roll_6d",
    "imbalanced_mixture",
    "imbalanced_means",
    "TOY_SETS",
    "toy_data",
]


def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """2-D swiss roll ``u (cos u, sin u) / 5`` for ``u ~ U(1.5 pi, 4.5 pi)``, plus noise: ``(n, 2)``."""
    n = positive_int(n)
    u = 1.5 * math.pi + 3 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1) / 5.0
    return (x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def eight_gaussians(n: int, generator: torch.Generator | None = None, radius: float = 1.5, std: float = 0.1) -> torch.Tensor:
    """Eight equal Gaussians (std ``std``) on a circle of radius ``radius``: ``(n, 2)``."""
    n = positive_int(n)
    k = torch.randint(8, (n,), generator=generator)
    ang = k.double() * (2 * math.pi / 8)
    c = radius * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return (c + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the 8 black squares of a 4x4 checkerboard on ``[-2, 2)²``: ``(n, 2)``."""
    n = positive_int(n)
    x1 = 4 * torch.rand(n, generator=generator, dtype=torch.float64) - 2
    x2_ = torch.rand(n, generator=generator, dtype=torch.float64) - torch.randint(2, (n,), generator=generator).double() * 2
    x2 = x2_ + (torch.floor(x1) % 2)
    return torch.stack([x1, x2], 1).float()


def moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """Two interleaving half circles (sklearn's ``make_moons`` geometry), centred: ``(n, 2)``."""
    n = positive_int(n)
    which = torch.randint(2, (n,), generator=generator)
    u = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    upper = torch.stack([torch.cos(u), torch.sin(u)], 1)
    lower = torch.stack([1 - torch.cos(u), 0.5 - torch.sin(u)], 1)
    x = torch.where(which[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    return (x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def swiss_roll_6d(
    n: int, generator: torch.Generator | None = None, noise: float = 0.03, extra_noise: float = 0.05,
    return_tangent: bool = False,
):
    """3-D swiss roll (a 2-D manifold) in the first 3 coordinates plus 3 noisy extra coordinates.

    ``x = (u cos u / 5, h, u sin u / 5, e_1, e_2, e_3)``, ``u ~ U(1.5pi, 4.5pi)``, ``h ~ U(-1, 1)``,
    ``e ~ N(0, extra_noise²)``, plus ``N(0, noise²)`` on the roll coordinates. Returns ``(n, 6)``;
    with ``return_tangent`` also the orthonormal tangent frame ``(n, 6, 2)`` of the manifold
    (directions ``d/du`` and ``d/dh``) at each clean point.
    """
    n = positive_int(n)
    u = 1.5 * math.pi + 3 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    h = 2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1
    x = torch.zeros(n, 6, dtype=torch.float64)
    x[:, 0], x[:, 1], x[:, 2] = u * torch.cos(u) / 5, h, u * torch.sin(u) / 5
    x[:, :3] += noise * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    x[:, 3:] = extra_noise * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    if not return_tangent:
        return x.float()
    tu = torch.zeros(n, 6, dtype=torch.float64)
    tu[:, 0], tu[:, 2] = torch.cos(u) - u * torch.sin(u), torch.sin(u) + u * torch.cos(u)
    tu = tu / tu.norm(dim=1, keepdim=True)
    th = torch.zeros(n, 6, dtype=torch.float64)
    th[:, 1] = 1.0
    return x.float(), torch.stack([tu, th], 2).float()


def imbalanced_mixture(
    n: int, generator: torch.Generator | None = None, weights: tuple[float, ...] = (0.8, 0.15, 0.05),
    std: float = 0.15, radius: float = 1.5, return_labels: bool = False,
):
    """Isotropic Gaussians (std ``std``) at the vertices of a regular polygon of radius ``radius``
    with the given mixture ``weights``: ``(n, 2)`` (and labels ``(n,)`` with ``return_labels``).
    The means are :func:`imbalanced_means`."""
    n = positive_int(n)
    w = torch.tensor(weights, dtype=torch.float64)
    if (w <= 0).any() or abs(float(w.sum()) - 1) > 1e-9:
        raise ValueError(f"weights must be positive and sum to 1; got {weights}")
    k = torch.multinomial(w, n, replacement=True, generator=generator)
    x = imbalanced_means(len(weights), radius)[k] + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (x.float(), k) if return_labels else x.float()


def imbalanced_means(k: int, radius: float = 1.5) -> torch.Tensor:
    """Vertices of a regular k-gon of radius ``radius``, ``(k, 2)`` float64."""
    ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k) + math.pi / 2
    return radius * torch.stack([torch.cos(ang), torch.sin(ang)], 1)


TOY_SETS: dict[str, Callable[..., torch.Tensor]] = {
    "swiss_roll": swiss_roll,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "moons": moons,
    "swiss_roll_6d": swiss_roll_6d,
}


def toy_data(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` points of the toy set ``name`` (one of :data:`TOY_SETS`)."""
    if name not in TOY_SETS:
        raise ValueError(f"unknown toy set {name!r}; choose one of {sorted(TOY_SETS)}")
    return TOY_SETS[name](n, generator)
