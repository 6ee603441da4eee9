"""Diffusion of points in R^d (Q = I): the finite-dimensional special case used by the
Score Neural Operator's Gaussian-mixture task, the kernel score models and NDSM.

The schedule comes from an fsdiff :class:`~fsdiff.sde.SDE` built without a covariance,
``fsdiff.VPSDE(None, beta_min, beta_max)`` (its ``mean_scale``, ``std``, ``drift_coeff`` and
``diffusion_sq`` need no grid); the noise is standard normal in R^d.
A point-space score model is any callable ``score(x (B, d), t (B,)) -> grad log p_t(x) (B, d)``.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..sde import SDE

__all__ = ["PointScore", "perturb_points", "sample_points", "time_grid_points"]

PointScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _col(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c.to(dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))


def perturb_points(
    x0: torch.Tensor, t: torch.Tensor, sde: SDE, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_t = m(t) x0 + s(t) z`` with ``z ~ N(0, I)``: ``(B, d), (B,) -> (x_t, z)``."""
    if x0.ndim != 2 or t.shape != (x0.shape[0],):
        raise ValueError(f"expected x0 (B, d) and t (B,); got {tuple(x0.shape)} and {tuple(t.shape)}")
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return _col(sde.mean_scale(t), x0) * x0 + _col(sde.std(t), x0) * z, z


def time_grid_points(steps: int, eps: float, T: float = 1.0) -> torch.Tensor:
    """Uniform decreasing times ``T = t_0 > ... > t_steps = eps``, shape ``(steps + 1,)``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if not 0 < eps < T:
        raise ValueError(f"eps must lie in (0, {T}); got {eps}")
    return torch.linspace(T, eps, steps + 1, dtype=torch.float64)


@torch.no_grad()
def sample_points(
    score: PointScore,
    sde: SDE,
    n: int,
    dim: int,
    steps: int = 500,
    eps: float = 1e-3,
    method: str = "em",
    generator: torch.Generator | None = None,
    x_init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Reverse-time sampling in R^d: Euler–Maruyama (``"em"``) or probability-flow Heun (``"ode"``).

    Starts from ``N(0, s(T)² I)`` (or ``x_init``) and integrates
    ``dX = [a X - g² score] dt + g dW`` (EM) or ``dX = [a X - ½ g² score] dt`` (Heun) from
    ``T`` down to ``eps``. Returns ``(n, dim)``.
    """
    if method not in ("em", "ode"):
        raise ValueError(f"method must be 'em' or 'ode'; got {method!r}")
    times = time_grid_points(steps, eps, sde.T)
    if x_init is None:
        x = float(sde.std(sde.T)) * torch.randn(n, dim, generator=generator, dtype=dtype)
    else:
        if x_init.shape != (n, dim):
            raise ValueError(f"x_init has shape {tuple(x_init.shape)}; expected {(n, dim)}")
        x = x_init.to(dtype).clone()

    def drift(x: torch.Tensor, t: float, ode: bool) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=torch.float64)
        g2 = float(sde.diffusion_sq(t))
        return float(sde.drift_coeff(t)) * x - (0.5 if ode else 1.0) * g2 * score(x, tt.to(x.dtype))

    for i in range(steps):
        t0, t1 = float(times[i]), float(times[i + 1])
        dt = t1 - t0  # negative
        if method == "em":
            g = float(sde.diffusion_sq(t0)) ** 0.5
            x = x + drift(x, t0, False) * dt + g * abs(dt) ** 0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        else:
            d0 = drift(x, t0, True)
            x_pred = x + d0 * dt
            x = x + 0.5 * (d0 + drift(x_pred, t1, True)) * dt
    return x
