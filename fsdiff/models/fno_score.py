"""Time-conditioned Fourier neural operator for the coloured-noise score (``FNOScore``).

Architecture (channels-first, spatial axes flattened between spectral layers)::

    [x_t, cond, periodic features] --1x1--> width
    n_layers x:  h <- GELU( (1 + s_l(t)) * (K_l h + W_l h + b_l) + c_l(t) )   (no GELU after the last)
    --1x1--> projection_channels --GELU--1x1--> in_channels

``K_l`` is a :class:`~fsdiff.models.spectral.SpectralConv` on ``|k_i| <= K_i`` and
``(s_l, c_l)`` per-sample FiLM from a sinusoidal embedding of ``t``. The FiLM scale is
folded into the per-sample 1x1 weight and into the Fourier coefficients, and the shift
into mode 0, so conditioning costs no extra pass over the grid.

Every layer is a continuum operator (pointwise maps, Fourier multipliers on fixed modes,
mode-1 positional features), so the same weights evaluate at any resolution; a grid with
fewer modes than ``modes`` uses the modes it has (``min(K_i, (N_i - 1) // 2)``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..grid import Grid
from .._checks import batch_times
from .embedding import TimeFiLM, periodic_features
from .spectral import SpectralConv, normalize_modes

__all__ = ["FNOScore"]

_POSITIONAL = ("none", "periodic")


def _pointwise(lin: nn.Linear, h: torch.Tensor, scale: torch.Tensor | None = None,
               add: torch.Tensor | None = None) -> torch.Tensor:
    """1x1 channel mix on ``h (B, I, S)``: ``(scale * W) h + (add or bias)`` -> ``(B, O, S)``.

    ``scale (B, O)`` gives a per-sample weight; ``add (B, O, S)`` replaces the bias.
    """
    B = h.shape[0]
    w = lin.weight.to(h.dtype)
    wb = w.expand(B, *w.shape) if scale is None else scale[:, :, None] * w
    if add is None:
        add = lin.bias.to(h.dtype)[None, :, None]
    return torch.baddbmm(add, wb, h)


class FNOScore(nn.Module):
    """Fourier neural operator predicting the coloured noise: ``model(x_t, t, grid) -> eta_hat``.

    Parameters
    ----------
    in_channels : int
        Data channels C (input and output).
    width : int
        Hidden channels.
    modes : int or sequence of int
        ``(K_1, ..., K_d)``: keep ``|k_i| <= K_i`` on every axis (``(2K_1+1) x (K_2+1)`` rfft
        entries in 2-D). The model's spatial dimension is ``d = len(modes)`` (an int means 1-D).
    n_layers : int
        Number of Fourier blocks.
    cond_channels : int
        Extra input channels ``cond (B, cond_channels, *grid.shape)`` concatenated to ``x_t``.
    positional : {"none", "periodic"}
        ``"periodic"`` appends ``sin, cos(2 pi x_i / L_i)`` per axis (2d channels).
    time_embed_dim : int
        Size of the sinusoidal time embedding (even).
    time_max_freq : float
        Highest angular frequency of the time embedding (lowest is 1; ``t`` used as is).
    projection_channels : int or None
        Hidden size of the output MLP (default ``2 * width``).

    Notes
    -----
    ``model.spec`` is a plain dict of these arguments with ``"type": "fno_score"``;
    :func:`fsdiff.models.build_model` rebuilds the module from it.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        modes: int | Sequence[int] = (12, 12),
        n_layers: int = 4,
        cond_channels: int = 0,
        positional: str = "none",
        time_embed_dim: int = 64,
        time_max_freq: float = 1000.0,
        projection_channels: int | None = None,
    ):
        super().__init__()
        self.modes = normalize_modes(modes)
        for name, v, lo in (("in_channels", in_channels, 1), ("width", width, 1), ("n_layers", n_layers, 1),
                            ("cond_channels", cond_channels, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if positional not in _POSITIONAL:
            raise ValueError(f"positional must be one of {_POSITIONAL}, got {positional!r}")
        projection_channels = 2 * width if projection_channels is None else int(projection_channels)
        if projection_channels < 1:
            raise ValueError(f"projection_channels must be >= 1, got {projection_channels}")
        self.in_channels, self.width, self.n_layers = in_channels, width, n_layers
        self.cond_channels, self.positional = cond_channels, positional
        self.time_embed_dim, self.time_max_freq = int(time_embed_dim), float(time_max_freq)
        self.projection_channels = projection_channels
        d = len(self.modes)
        n_pos = 2 * d if positional == "periodic" else 0
        self.lifting = nn.Linear(in_channels + cond_channels + n_pos, width)
        self.spectral = nn.ModuleList(SpectralConv(width, width, self.modes, bias=False) for _ in range(n_layers))
        self.skip = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
        self.film = TimeFiLM(n_layers, width, self.time_embed_dim, self.time_max_freq)
        self.proj1 = nn.Linear(width, projection_channels)
        self.proj2 = nn.Linear(projection_channels, in_channels)

    @property
    def ndim(self) -> int:
        """Spatial dimension d the model works in."""
        return len(self.modes)

    @property
    def spec(self) -> dict:
        """Constructor arguments as plain data, with ``"type": "fno_score"``."""
        return {
            "type": "fno_score",
            "in_channels": self.in_channels,
            "width": self.width,
            "modes": list(self.modes),
            "n_layers": self.n_layers,
            "cond_channels": self.cond_channels,
            "positional": self.positional,
            "time_embed_dim": self.time_embed_dim,
            "time_max_freq": self.time_max_freq,
            "projection_channels": self.projection_channels,
        }

    def _inputs(self, x_t: torch.Tensor, grid: Grid, cond: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an fsdiff.Grid, got {type(grid).__name__}")
        if grid.ndim != self.ndim:
            raise ValueError(f"model works in {self.ndim}-D (modes={self.modes}) but the grid {grid!r} is {grid.ndim}-D")
        grid.check(x_t, "x_t", min_leading=2, finite=True)
        if x_t.ndim != grid.ndim + 2 or x_t.shape[1] != self.in_channels:
            raise ValueError(
                f"x_t has shape {tuple(x_t.shape)}; expected (batch, {self.in_channels}, {', '.join(map(str, grid.shape))})"
            )
        parts = [x_t]
        if self.cond_channels:
            if cond is None:
                raise ValueError(f"model expects cond with {self.cond_channels} channels, got None")
            expected = (x_t.shape[0], self.cond_channels, *grid.shape)
            if tuple(cond.shape) != expected:
                raise ValueError(f"cond has shape {tuple(cond.shape)}; expected {expected}")
            parts.append(cond.to(x_t.dtype))
        elif cond is not None:
            raise ValueError("model was built with cond_channels=0 but cond was given")
        if self.positional == "periodic":
            pos = periodic_features(grid, x_t.dtype, x_t.device)
            parts.append(pos.expand(x_t.shape[0], *pos.shape))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x_t

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, grid: Grid,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted coloured noise.

        Parameters
        ----------
        x_t : ``(B, C, *grid.shape)``
        t : (B,) diffusion times (a float is broadcast)
        grid : Grid of dimension ``len(modes)``
        cond : ``(B, cond_channels, *grid.shape)`` or None

        Returns
        -------
        ``(B, C, *grid.shape)``
        """
        inp = self._inputs(x_t, grid, cond)
        B, spatial = x_t.shape[0], tuple(grid.shape)
        t = batch_times(t, B, x_t.dtype, x_t.device)
        scale, shift = self.film(t.to(self.lifting.weight.dtype))
        scale1 = (1.0 + scale).to(x_t.dtype)
        shift = shift.to(x_t.dtype)
        h = _pointwise(self.lifting, inp.reshape(B, inp.shape[1], -1))
        for l, (conv, skip) in enumerate(zip(self.spectral, self.skip)):
            s, c = scale1[:, l], shift[:, l]
            # (1 + s) (K h + W h + b) + c: scale and (1 + s) b + c applied in Fourier space
            spec = conv(h.reshape(B, self.width, *spatial), scale=s, shift=c + s * skip.bias.to(s.dtype))
            h = _pointwise(skip, h, scale=s, add=spec.reshape(B, self.width, -1))
            if l < self.n_layers - 1:
                h = F.gelu(h)
        h = F.gelu(_pointwise(self.proj1, h))
        out = _pointwise(self.proj2, h)
        return out.reshape(B, self.in_channels, *spatial)
