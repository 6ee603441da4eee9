"""Sample metrics for point sets in R^d, ``(n, d)``: the one energy distance, the one sliced
Wasserstein distance and the memorisation ratio of point methods.

They share their cores with the function-space metrics of :mod:`fsdiff.eval.metrics` (Euclidean
distances between rows), so a point in R^d and a function on a grid are measured the same way.
"""

from __future__ import annotations

import torch

from ..eval import metrics as _metrics

__all__ = ["check_points", "energy_distance", "sliced_wasserstein", "point_memorization"]


def check_points(x: torch.Tensor, d: int | None = None, name: str = "x", min_n: int = 1,
                 finite: bool = False) -> torch.Tensor:
    """``x`` must be a ``(n, d)`` tensor with ``n >= min_n`` (and finite values if ``finite``); returns it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (B, {d if d is not None else 'd'})")
    if x.shape[0] < min_n:
        raise ValueError(f"{name} has {x.shape[0]} points; this metric needs at least {min_n}")
    if finite and not torch.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite values")
    return x


def _pair(x: torch.Tensor, y: torch.Tensor, min_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    check_points(x, None, "x", min_n, finite=True)
    check_points(y, x.shape[1], "y", min_n, finite=True)
    return x.detach().to(torch.float64), y.detach().to(torch.float64)


def energy_distance(x: torch.Tensor, y: torch.Tensor, unbiased: bool = True) -> float:
    """Energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` of point sets ``(n, d)``, ``(m, d)``.

    :func:`fsdiff.eval.metrics.energy_mmd` with the Euclidean norm; ``unbiased`` (default) is the
    U-statistic: 0 in expectation when the laws agree (it can be slightly negative; n, m >= 2).
    """
    a, b = _pair(x, y, 2 if unbiased else 1)
    return _metrics.energy_distance_rows(a, b, unbiased)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 128,
                       generator: torch.Generator | None = None, p: float = 2.0) -> float:
    """Sliced p-Wasserstein distance over ``n_projections`` uniform random unit directions of R^d.

    Exact 1-D transport per direction (:func:`fsdiff.eval.metrics.wasserstein_1d`);
    ``(mean_j W_p^p)^(1/p)``. The directions are drawn from ``generator``.
    """
    a, b = _pair(x, y, 1)
    theta = torch.randn(n_projections, a.shape[1], generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    w = _metrics.wasserstein_1d((a @ theta.T).T, (b @ theta.T).T, p)
    return float(w.pow(p).mean().pow(1.0 / p))


def point_memorization(generated: torch.Tensor, train: torch.Tensor,
                       threshold: float = _metrics.MEMORIZATION_THRESHOLD) -> _metrics.MemorizationResult:
    """:func:`fsdiff.eval.metrics.memorization` for points ``(n, d)`` vs ``(N, d)`` (Euclidean distances)."""
    g, t = _pair(generated, train, 1)
    return _metrics.memorization_rows(g, t, threshold)
