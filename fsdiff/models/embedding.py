"""Time embeddings, FiLM conditioning and periodic positional features for score operators."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..grid import Grid

__all__ = ["SinusoidalTimeEmbedding", "TimeFiLM", "periodic_features"]


class SinusoidalTimeEmbedding(nn.Module):
    """``t (B,) -> [sin(f_j t), cos(f_j t)] (B, dim)`` with ``f_j`` geometric in ``[1, max_freq]``.

    The diffusion time is used as is (no ``t * 999``): with ``t`` in ``[0, 1]`` the lowest
    frequency resolves the whole range and ``max_freq`` the finest time scale.
    """

    def __init__(self, dim: int = 64, max_freq: float = 1000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding dim must be an even integer >= 2, got {dim}")
        if not max_freq >= 1.0:
            raise ValueError(f"max_freq must be >= 1, got {max_freq}")
        self.dim = int(dim)
        self.max_freq = float(max_freq)
        half = self.dim // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(self.max_freq), half, dtype=torch.float64))
        self.register_buffer("freqs", freqs.to(torch.get_default_dtype()), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,) -> (B, dim)``."""
        arg = t[:, None] * self.freqs.to(t.dtype)
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class TimeFiLM(nn.Module):
    """Per-sample FiLM parameters from the diffusion time.

    ``t (B,) -> sinusoidal (B, embed_dim) -> Linear, GELU, Linear -> (scale, shift)``, each
    ``(B, n_blocks, channels)``; a block applies ``(1 + scale) * h + shift``.
    """

    def __init__(self, n_blocks: int, channels: int, embed_dim: int = 64, max_freq: float = 1000.0):
        super().__init__()
        self.n_blocks, self.channels = int(n_blocks), int(channels)
        self.embed = SinusoidalTimeEmbedding(embed_dim, max_freq)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 2 * embed_dim), nn.GELU(), nn.Linear(2 * embed_dim, 2 * n_blocks * channels)
        )

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,) -> (scale, shift)``, each ``(B, n_blocks, channels)``."""
        out = self.mlp(self.embed(t)).reshape(t.shape[0], 2, self.n_blocks, self.channels)
        return out[:, 0], out[:, 1]


def periodic_features(grid: Grid, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``[sin(2 pi x_i / L_i), cos(2 pi x_i / L_i)]`` per axis: ``(2 d, *grid.shape)``.

    Both are mode-1 functions, represented exactly on every grid, so they keep the
    operator discretisation invariant (unlike non-periodic coordinate ramps).
    """
    feats = []
    for i, (x, L) in enumerate(zip(grid.coords, grid.length)):
        view = [1] * grid.ndim
        view[i] = -1
        arg = (2 * math.pi / L) * x.reshape(view)
        for f in (torch.sin(arg), torch.cos(arg)):
            feats.append(f.expand(grid.shape))
    return torch.stack(feats).to(dtype=dtype, device=device)
