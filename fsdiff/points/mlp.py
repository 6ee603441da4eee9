"""A small MLP score model for points in R^d and its trainer."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .._checks import batch_times
from ..sde import SDE
from ..training.fit import fit

__all__ = ["MLPScore", "train_score"]


class MLPScore(nn.Module):
    """Small MLP score model for points: ``s(x, t) = net([x, emb(t)]) / sigma_vp(t)`` (+ optional base).

    ``base(x)`` (e.g. ``pi_ref.score``) is added if given, so the network learns a correction.
    Sinusoidal time features; ``sigma_vp`` from ``sde`` (floored at ``sigma_min``).
    """

    def __init__(self, dim: int, sde: SDE, hidden: int = 128, depth: int = 3, n_freq: int = 8,
                 sigma_min: float = 1e-2, base: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.sde, self.sigma_min, self.base = sde, float(sigma_min), base
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq, dtype=torch.float32) * math.pi)
        layers: list[nn.Module] = []
        w = dim + 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(w, hidden), nn.SiLU()]
            w = hidden
        layers.append(nn.Linear(w, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = batch_times(t, x.shape[0], x.dtype)
        ang = t[:, None] * self.freqs.to(x.dtype)[None]
        h = torch.cat([x, torch.sin(ang), torch.cos(ang)], 1)
        sig = self.sde.std(t.double()).clamp_min(self.sigma_min).to(x.dtype)[:, None]
        out = self.net(h) / sig
        if self.base is not None:
            out = out + self.base(x)
        return out


def train_score(model: nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor,
                steps: int, batch: int = 256, lr: float = 2e-3, generator: torch.Generator | None = None) -> tuple[list[float], float]:
    """Adam with a cosine schedule (:func:`fsdiff.training.fit`) on ``loss_fn(x0_batch)``, batches drawn
    from ``data (n, d)`` with ``generator``; returns ``(losses, seconds)``."""
    def loss_of_step(_: int) -> torch.Tensor:
        return loss_fn(data[torch.randint(data.shape[0], (batch,), generator=generator)])

    result = fit(model.parameters(), loss_of_step, steps, lr)
    return result.losses, result.seconds
