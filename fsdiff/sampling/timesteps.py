"""Time grids for the reverse-time samplers: decreasing from ``T`` to ``eps > 0``.

* ``"uniform"``: ``t_i = T + (i/N) (eps - T)``.
* ``"quadratic"``: ``t_i = eps + (T - eps) (1 - i/N)²`` (steps concentrate near ``eps``).
* ``"edm"``: Karras et al.'s rho-schedule in the noise-to-signal level
  ``sigma(t) = s(t) / m(t)`` (the EDM sigma of the SDE, ``sigma = s`` for VE):
  ``sigma_i = (sigma_max^(1/rho) + (i/N) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` with
  ``sigma_max = sigma(T)``, ``sigma_min = sigma(eps)``, mapped back to ``t`` by bisection
  (``sigma`` is increasing in ``t``). Endpoints are exactly ``T`` and ``eps``.
"""

from __future__ import annotations

import math

import torch

from ..sde import SDE

__all__ = ["time_steps", "TIME_GRIDS", "noise_level"]

TIME_GRIDS = ("uniform", "quadratic", "edm")


def noise_level(sde: SDE, t) -> torch.Tensor:
    """EDM noise level ``sigma(t) = s(t) / m(t)`` (float64)."""
    return sde.std(t) / sde.mean_scale(t)


def _invert_noise_level(sde: SDE, sigma: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    a = torch.full_like(sigma, lo)
    b = torch.full_like(sigma, hi)
    for _ in range(80):  # interval shrinks by 2^-80: float64-exact
        mid = 0.5 * (a + b)
        up = noise_level(sde, mid) < sigma
        a = torch.where(up, mid, a)
        b = torch.where(up, b, mid)
    return 0.5 * (a + b)


def time_steps(sde: SDE, steps: int, eps: float = 1e-3, kind: str | torch.Tensor = "uniform", rho: float = 7.0) -> torch.Tensor:
    """Decreasing times ``(steps + 1,)`` float64 from ``sde.T`` to ``eps``.

    ``kind`` is one of :data:`TIME_GRIDS`, or an explicit decreasing tensor (validated and
    returned as float64; ``steps`` must then equal its length minus one).
    """
    T = float(sde.T)
    if isinstance(kind, torch.Tensor):
        t = kind.detach().to("cpu", torch.float64).flatten()
        if t.numel() < 2 or not bool((t[1:] < t[:-1]).all()):
            raise ValueError(f"an explicit time grid must be strictly decreasing with >= 2 entries; got {t.tolist()[:8]}")
        if not (0 < float(t[-1]) and float(t[0]) <= T):
            raise ValueError(f"explicit time grid must lie in (0, {T}]; got [{float(t[-1])}, {float(t[0])}]")
        if steps is not None and steps != t.numel() - 1:
            raise ValueError(f"steps={steps} but the explicit time grid has {t.numel() - 1} steps")
        return t
    if not isinstance(steps, (int,)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    eps = float(eps)
    if not (math.isfinite(eps) and 0 < eps < T):
        raise ValueError(f"eps must lie in (0, T={T}); got {eps}")
    u = torch.arange(steps + 1, dtype=torch.float64) / steps
    if kind == "uniform":
        t = T + u * (eps - T)
    elif kind == "quadratic":
        t = eps + (T - eps) * (1 - u) ** 2
    elif kind == "edm":
        if not (math.isfinite(rho) and rho > 0):
            raise ValueError(f"rho must be positive; got {rho}")
        smax, smin = float(noise_level(sde, T)), float(noise_level(sde, eps))
        sig = (smax ** (1 / rho) + u * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        t = _invert_noise_level(sde, sig, eps, T)
    else:
        raise ValueError(f"unknown time grid {kind!r}; expected one of {TIME_GRIDS} or a tensor")
    t[0], t[-1] = T, eps
    return t
