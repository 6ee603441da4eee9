"""The one place that converts between the network's output and other score parametrisations.

Every score model in fsdiff (trained network or exact oracle) keeps one protocol,
``model(x_t, t, grid) -> eta_hat``: it predicts the coloured noise ``eta ~ N(0, Q)`` in
``x_t = m(t) x_0 + s(t) eta``. From it:

* preconditioned score ``Q grad log p_t(x_t) = -eta / s(t)`` (exact for the conditional law;
  the minimiser of denoising score matching gives the marginal one);
* denoised estimate (Tweedie) ``x0_hat = (x_t - s(t) eta) / m(t)``.

All shapes ``(B, C, *grid.shape)``; ``t`` a float or ``(B,)``.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .grid import Grid
from ._checks import as_time, per_sample
from .sde import SDE

__all__ = ["ScoreModel", "eta_to_qscore", "qscore_to_eta", "eta_to_x0", "x0_to_eta"]


class ScoreModel(Protocol):
    """``model(x_t (B, C, *grid.shape), t (B,), grid) -> eta_hat (B, C, *grid.shape)``."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, grid: Grid) -> torch.Tensor: ...


def eta_to_qscore(eta: torch.Tensor, t, sde: SDE) -> torch.Tensor:
    """``Q grad log p_t = -eta / s(t)``."""
    return -eta / per_sample(sde.std(as_time(t, eta)), eta)


def qscore_to_eta(qscore: torch.Tensor, t, sde: SDE) -> torch.Tensor:
    """Inverse of :func:`eta_to_qscore`: ``eta = -s(t) Q grad log p_t``."""
    return -qscore * per_sample(sde.std(as_time(t, qscore)), qscore)


def eta_to_x0(x_t: torch.Tensor, eta: torch.Tensor, t, sde: SDE) -> torch.Tensor:
    """Denoised estimate ``(x_t - s(t) eta) / m(t)``."""
    t = as_time(t, x_t)
    return (x_t - per_sample(sde.std(t), x_t) * eta) / per_sample(sde.mean_scale(t), x_t)


def x0_to_eta(x_t: torch.Tensor, x0: torch.Tensor, t, sde: SDE) -> torch.Tensor:
    """Noise implied by a clean estimate: ``(x_t - m(t) x0) / s(t)``."""
    t = as_time(t, x_t)
    return (x_t - per_sample(sde.mean_scale(t), x_t) * x0) / per_sample(sde.std(t), x_t)
