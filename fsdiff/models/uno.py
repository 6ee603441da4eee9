"""A band-limited U-shaped neural operator for scores (``UNOScore``), exactly resolution invariant.

Design
------
The operator maps functions to functions through a fixed *band*: it keeps the Fourier modes
``|k_i| <= K`` of its input (``modes = K``), works on the internal grid of ``n = 4 ceil((2K + 2) / 4)``
points per axis (the smallest multiple of 4 holding every mode ``|k_i| <= K``), and returns a
function band-limited to ``|k_i| <= K``::

    x (any grid) --Fourier restrict/prolong--> internal grid (n², modes <= K)
        --> U-Net: [conv 3x3 + per-channel global Fourier filter] residual blocks with FiLM(t),
            three levels n, n/2, n/4 (average pooling down, nearest up, one skip per level)
        --> keep |k_i| <= K --Fourier prolong/restrict--> the evaluation grid

Every step after the first restriction happens on the same internal grid, so the output on any
evaluation grid holding the band is the *same function* (exact up to floating-point FFT error,
~1e-7 in float32): the model is a map between band-limited spaces, which is what makes a neural
operator free of aliasing across resolutions. Above the band the output is zero, so a
:class:`~fsdiff.models.SpectralPreconditioner` around it hands those modes to the exact Gaussian
posterior of the data statistics: zero-power modes (MNIST beyond ``|k| = 13``) are exact, and a
fitted spectral tail covers smooth non-band-limited data.

Local 3x3 convolutions act on the internal grid (a fixed physical stencil of width ``3 L / n``);
the per-channel Fourier filters (one complex weight per channel and mode of each level's grid)
give every block a global receptive field at the cost of one FFT pair.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..grid import Grid, resample
from .._checks import batch_times
from .embedding import SinusoidalTimeEmbedding

__all__ = ["UNOScore", "band_limit", "internal_size"]


def internal_size(K: int) -> int:
    """Points per axis of the internal grid for band ``|k_i| <= K``: the least multiple of 4 >= 2K + 2."""
    return 4 * math.ceil((2 * K + 2) / 4)


def band_limit(u: torch.Tensor, grid: Grid, K: int) -> torch.Tensor:
    """Keep the modes ``|k_i| <= K`` of ``u (..., *grid.shape)`` (and drop Nyquist modes)."""
    mask = grid.mode_mask
    for k in grid.wavenumbers:
        mask = mask & (k.abs() <= K)
    return grid.irfft(grid.rfft(u) * mask.to(u.device))


class GlobalFourierFilter(nn.Module):
    """Per-channel multiplier on every Fourier mode of an ``n x n`` grid: ``(B, C, n, n) -> same``."""

    def __init__(self, channels: int, n: int):
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.zeros(channels, n, n // 2 + 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xh = torch.fft.rfft2(x, norm="forward")
        return torch.fft.irfft2(xh * torch.view_as_complex(self.weight), s=x.shape[-2:], norm="forward")


class ResBlock(nn.Module):
    """GroupNorm-GELU-conv(+Fourier filter), FiLM from the time embedding, GroupNorm-GELU-conv, residual."""

    def __init__(self, cin: int, cout: int, n: int, emb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, padding_mode="circular")
        self.fourier = GlobalFourierFilter(cin, n)
        self.mix = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, padding_mode="circular")
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        a = F.gelu(self.norm1(x))
        h = self.conv1(a) + self.mix(self.fourier(a))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.gelu(self.norm2(h * (1 + scale) + shift))
        return self.skip(x) + self.conv2(h)


class UNOScore(nn.Module):
    """Band-limited U-shaped neural operator: ``model(x_t, t, grid, cond=None) -> (B, C, *grid.shape)``.

    Parameters
    ----------
    in_channels : int
        Data channels C (input and output).
    modes : int or (K, K)
        Band ``|k_i| <= K`` of input and output (2-D; both entries equal).
    channels : sequence of 3 ints
        Widths of the three levels (internal grids ``n``, ``n/2``, ``n/4``).
    blocks : int
        Residual blocks per level, on the way down and on the way up.
    cond_channels : int
        Extra input channels ``cond (B, cond_channels, *grid.shape)``.
    time_embed_dim, time_max_freq : sinusoidal embedding of ``t`` (used as is, no ``t * 999``).
    groups : GroupNorm groups.
    position : bool
        Add the four functions ``sin, cos(2 pi x_i / L_i)`` as input channels. Every other part of the
        network is translation equivariant and a Fourier-diagonal Gaussian part is stationary, so
        without them the model cannot tell where in the box the data live (MNIST digits come out
        shifted and wrapped across the periodic border). They are band-limited (``|k| = 1``), so the
        model stays the same function on every grid.

    Notes
    -----
    The output convolution starts at zero, so inside a :class:`SpectralPreconditioner` an
    untrained model is exactly the Gaussian posterior. ``model.spec`` rebuilds it.
    """

    def __init__(self, in_channels: int = 1, modes: int | Sequence[int] = 13, channels: Sequence[int] = (32, 64, 128),
                 blocks: int = 1, cond_channels: int = 0, time_embed_dim: int = 64, time_max_freq: float = 1000.0,
                 groups: int = 8, position: bool = False):
        super().__init__()
        ks = (modes, modes) if isinstance(modes, int) else tuple(int(k) for k in modes)
        if len(ks) != 2 or ks[0] != ks[1] or ks[0] < 2:
            raise ValueError(f"UNOScore is 2-D with a square band: modes must be K or [K, K] with K >= 2; got {modes!r}")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive widths (one per level); got {channels!r}")
        for name, v, lo in (("in_channels", in_channels, 1), ("blocks", blocks, 1), ("cond_channels", cond_channels, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        self.in_channels, self.cond_channels, self.K = in_channels, cond_channels, ks[0]
        self.channels, self.blocks, self.groups = channels, blocks, int(groups)
        self.position = bool(position)
        self.time_embed_dim, self.time_max_freq = int(time_embed_dim), float(time_max_freq)
        self.n = internal_size(self.K)
        self.internal = Grid((self.n, self.n))
        emb = 4 * channels[0]
        self.time = nn.Sequential(SinusoidalTimeEmbedding(self.time_embed_dim, self.time_max_freq),
                                  nn.Linear(self.time_embed_dim, emb), nn.GELU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(in_channels + cond_channels + 4 * self.position, channels[0], 3, padding=1, padding_mode="circular")
        sizes = [self.n, self.n // 2, self.n // 4]
        self.down = nn.ModuleList()
        c = channels[0]
        for width, n in zip(channels, sizes):
            for _ in range(blocks):
                self.down.append(ResBlock(c, width, n, emb, groups))
                c = width
        self.mid = ResBlock(c, c, sizes[2], emb, groups)
        self.up = nn.ModuleList()
        for lvl in (2, 1, 0):
            for b in range(blocks):
                self.up.append(ResBlock(c + (channels[lvl] if b == 0 else 0), channels[lvl], sizes[lvl], emb, groups))
                c = channels[lvl]
        self.norm_out = nn.GroupNorm(min(groups, c), c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1, padding_mode="circular")
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def modes(self) -> tuple[int, int]:
        return (self.K, self.K)

    @property
    def spec(self) -> dict:
        return {"type": "uno_score", "in_channels": self.in_channels, "modes": self.K, "channels": list(self.channels),
                "blocks": self.blocks, "cond_channels": self.cond_channels, "time_embed_dim": self.time_embed_dim,
                "time_max_freq": self.time_max_freq, "groups": self.groups,
                "position": self.position}

    def _to_internal(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        if grid.ndim != 2:
            raise ValueError(f"UNOScore is 2-D; got the {grid.ndim}-D grid {grid!r}")
        # a grid coarser than the band holds a function band-limited to its own modes: prolonging it is exact
        internal = Grid((self.n, self.n), grid.length)
        return band_limit(resample(u, grid, internal), internal, self.K)

    def _position(self, length, like: torch.Tensor) -> torch.Tensor:
        """``(1, 4, n, n)``: sin and cos of ``2 pi x_i / L_i`` on the internal grid (cached per length, device, dtype)."""
        key = (tuple(length), like.device, like.dtype)
        cache = self.__dict__.setdefault("_position_cache", {})
        if key not in cache:
            g = Grid((self.n, self.n), length)
            feats = [f(2 * math.pi * c / L) for c, L in zip(g.mesh(), g.length) for f in (torch.sin, torch.cos)]
            cache[key] = torch.stack(feats)[None].to(device=like.device, dtype=like.dtype)
        return cache[key]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, grid: Grid, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x_t (B, C, *grid.shape)``, ``t (B,)``, ``cond (B, cond_channels, *grid.shape)`` -> ``(B, C, *grid.shape)``."""
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an fsdiff.Grid, got {type(grid).__name__}")
        grid.check(x_t, "x_t", min_leading=2, finite=True)
        if x_t.ndim != 4 or x_t.shape[1] != self.in_channels:
            raise ValueError(f"x_t has shape {tuple(x_t.shape)}; expected (batch, {self.in_channels}, {', '.join(map(str, grid.shape))})")
        parts = [x_t]
        if self.cond_channels:
            expected = (x_t.shape[0], self.cond_channels, *grid.shape)
            if cond is None or tuple(cond.shape) != expected:
                raise ValueError(f"cond must have shape {expected}; got {None if cond is None else tuple(cond.shape)}")
            parts.append(cond.to(x_t.dtype))
        elif cond is not None:
            raise ValueError("model was built with cond_channels=0 but cond was given")
        B = x_t.shape[0]
        t = batch_times(t, B, x_t.dtype, x_t.device)
        emb = self.time(t.to(self.conv_in.weight.dtype)).to(x_t.dtype)
        h = self._to_internal(torch.cat(parts, 1) if len(parts) > 1 else x_t, grid)
        if self.position:
            h = torch.cat([h, self._position(grid.length, h).expand(B, -1, -1, -1)], 1)
        h = self.conv_in(h)
        skips = []
        blocks = iter(self.down)
        for lvl in range(3):
            for _ in range(self.blocks):
                h = next(blocks)(h, emb)
            skips.append(h)
            if lvl < 2:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, emb)
        blocks = iter(self.up)
        for lvl in (2, 1, 0):
            h = torch.cat([h, skips.pop()], 1)
            for _ in range(self.blocks):
                h = next(blocks)(h, emb)
            if lvl > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        out = self.conv_out(F.gelu(self.norm_out(h)))
        internal = Grid((self.n, self.n), grid.length)
        return resample(band_limit(out, internal, self.K), internal, grid)
