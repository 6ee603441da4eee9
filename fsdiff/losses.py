"""Denoising score matching in function space, with quadrature (L²) norms.

For ``x_t = m(t) x_0 + s(t) eta``, ``eta ~ N(0, Q)``, the network predicts ``eta``; the
preconditioned conditional score is ``Q grad log p(x_t | x_0) = -eta / s(t)``. The per-sample loss

    l(theta; x_0, t, eta) = w(t) || eta_hat_theta(x_t, t) - eta ||²_{L²(D)}

uses the grid's quadrature (:meth:`fsdiff.Grid.inner`), so it converges under refinement
instead of growing with the number of points. Its minimiser over functions of ``x_t`` is
``E[eta | x_t]`` whatever the (positive) weighting; the weighting only changes how the
times are traded off. In terms of the preconditioned score ``S = Q grad log p_t``
(``S_theta = -eta_hat / s(t)``):

* ``"none"``       ``w = 1``: ``s(t)² E||S_theta - S||²`` - score matching weighted by the
  conditional variance (Song et al.'s default, the "eps-prediction" loss);
* ``"score"``      ``w = 1 / s(t)²``: unweighted preconditioned score matching ``E||S_theta - S||²``
  (large variance near ``t = 0``);
* ``"likelihood"`` ``w = g(t)² / s(t)²``: ``g(t)² E||S_theta - S||²``, the likelihood weighting
  of Song et al. (2021) measured in the L² norm of the preconditioned score.

* ``"precond"``    ``w = 1 / E||eta - eta_G||²`` from the model's ``loss_weight(t, grid)``
  (:class:`fsdiff.models.SpectralPreconditioner`): every t has unit expected loss for a zero
  residual, the function-space form of EDM's ``lambda(sigma) = 1 / c_out²``.

Times are drawn on ``[eps, T]``: ``"uniform"`` in ``t``, ``"log_std"`` uniform in
``log s(t)`` (more weight at small noise levels), or ``"edm"``: EDM's log-normal noise levels,
``ln(s/m) ~ N(-1.2, 1.2²)``, clamped to ``[eps, T]`` (most weight at intermediate noise, where
the shapes of the data are decided), or ``"edm_uniform"``: an equal mixture of ``"edm"`` and
``"uniform"`` (EDM's weight on intermediate noise, with half the draws spread over large t too).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import batch_times, check_finite, check_generator
from .grid import Grid
from .sde import SDE

__all__ = ["TIME_SAMPLINGS", "WEIGHTINGS", "sample_time", "loss_weight", "dsm_loss"]

TIME_SAMPLINGS = ("uniform", "log_std", "edm", "edm_uniform")
WEIGHTINGS = ("none", "score", "likelihood", "precond")
#: EDM's log-normal density of the noise level sigma = s(t) / m(t): ln sigma ~ N(P_MEAN, P_STD²)
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2


def _time_from_std(sde: SDE, target: torch.Tensor, lo: float, hi: float, iters: int = 60) -> torch.Tensor:
    """Invert the (increasing) map ``t -> s(t)`` on ``[lo, hi]`` by bisection, float64."""
    a = torch.full_like(target, lo)
    b = torch.full_like(target, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        below = sde.std(mid) < target
        a = torch.where(below, mid, a)
        b = torch.where(below, b, mid)
    return 0.5 * (a + b)


def _edm_time(sde: SDE, u: torch.Tensor, eps: float, T: float) -> torch.Tensor:
    """EDM's log-normal noise level of the uniform draws ``u``, clamped to ``[eps, T]``, as times: float64."""
    from .sampling.timesteps import _invert_noise_level, noise_level

    z = math.sqrt(2.0) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-12, 1 - 1e-12))
    lo, hi = float(noise_level(sde, eps)), float(noise_level(sde, T))
    sig = torch.exp(EDM_P_MEAN + EDM_P_STD * z).clamp(lo, hi)
    return _invert_noise_level(sde, sig, eps, T)


def sample_time(
    n: int, sde: SDE, generator: torch.Generator | None = None, time_sampling: str = "uniform",
    eps: float = 1e-3, device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``n`` diffusion times on ``[eps, T]`` from the chosen density: ``(n,)`` float32.

    One ``torch.rand`` call of size ``n`` on ``generator`` in every mode.
    """
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}; got {time_sampling!r}")
    T = float(sde.T)
    if not 0 < eps < T:
        raise ValueError(f"eps must lie in (0, T={T}); got {eps}")
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device if generator is not None else "cpu")
    if time_sampling == "edm_uniform":  # u < 1/2 picks EDM, the rest uniform; 2u mod 1 is again uniform on [0, 1)
        edm = u < 0.5
        t = eps + (T - eps) * (2 * u - 1)
        t[edm] = _edm_time(sde, 2 * u[edm], eps, T)
    elif time_sampling == "uniform":
        t = eps + (T - eps) * u
    elif time_sampling == "edm":
        t = _edm_time(sde, u, eps, T)
    else:
        lo, hi = math.log(float(sde.std(eps))), math.log(float(sde.std(T)))
        t = _time_from_std(sde, torch.exp(lo + (hi - lo) * u), eps, T)
    return t.to(dtype=torch.float32, device=device if device is not None else u.device)


def loss_weight(t: torch.Tensor, sde: SDE, weighting: str = "none", model=None, grid: Grid | None = None) -> torch.Tensor:
    """Per-time weight ``w(t)`` of the eta-prediction loss (see the module docstring): ``(B,)`` float64.

    ``"precond"`` asks ``model.loss_weight(t, grid)``.
    """
    if weighting == "precond":
        if not hasattr(model, "loss_weight"):
            raise ValueError("weighting 'precond' needs a preconditioned model (one with loss_weight(t, grid), "
                             f"e.g. SpectralPreconditioner); got {type(model).__name__}")
        return model.loss_weight(t, grid).double().to(t.device)
    if weighting == "none":
        return torch.ones_like(t, dtype=torch.float64)
    if weighting == "score":
        return sde.std(t).double() ** -2
    if weighting == "likelihood":
        return sde.diffusion_sq(t).double() / sde.std(t).double() ** 2
    raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")


def dsm_loss(
    model: Callable[[torch.Tensor, torch.Tensor, Grid], torch.Tensor],
    x0: torch.Tensor,
    sde: SDE,
    grid: Grid,
    generator: torch.Generator | None = None,
    t: torch.Tensor | float | None = None,
    eta: torch.Tensor | None = None,
    time_sampling: str = "uniform",
    weighting: str = "none",
    eps: float = 1e-3,
) -> torch.Tensor:
    """Per-sample denoising score-matching loss ``w(t) ||model(x_t, t, grid) - eta||²_{L²}``: ``(B,)``.

    Parameters
    ----------
    model : callable ``(x_t (B, C, *grid.shape), t (B,), grid) -> eta_hat``
    x0 : ``(B, C, *grid.shape)`` clean data on ``grid``.
    generator : random source for the times (drawn first, one call of size B) and the noise
        (nested across grids: same generator state, same function at every resolution).
    t : optional fixed times, a float or ``(B,)``; then no times are drawn.
    eta : optional fixed noise ``(B, C, *grid.shape)`` drawn from ``N(0, Q)``; then no noise is drawn.
    time_sampling, weighting, eps : see the module docstring.
    """
    grid.check(x0, "x0", min_leading=2)
    check_finite(x0, "x0")
    check_generator(generator)
    B = x0.shape[0]
    if t is None:
        t = sample_time(B, sde, generator, time_sampling, eps, device=x0.device)
    else:
        t = batch_times(t, B, torch.float32, x0.device)  # its range is checked by the SDE's marginal
    if eta is None:
        x_t, eta = sde.perturb(x0, t, grid, generator=generator)
    else:
        if eta.shape != x0.shape:
            raise ValueError(f"eta has shape {tuple(eta.shape)}; expected x0's shape {tuple(x0.shape)}")
        x_t = sde.marginal(x0, t, eta)
    eta_hat = model(x_t, t, grid)
    if eta_hat.shape != eta.shape:
        raise ValueError(f"model returned shape {tuple(eta_hat.shape)}; expected {tuple(eta.shape)}")
    diff = eta_hat - eta
    sq = grid.inner(diff, diff)
    if weighting != "none":
        sq = sq * loss_weight(t, sde, weighting, model, grid).to(sq.dtype)
    return sq
