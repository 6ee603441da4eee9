"""FNO encoder of a class prototype: a learned map from the prototype latent function to the conditioning.

``p (B, C, *grid.shape) -> [f(p)(r), code(p)] (B, out_channels + code_dim, *grid.shape)``:

    [p, periodic position features] --1x1--> width
    n_layers x:  h <- GELU(K_l h + W_l h + b_l)
    local features  f = h --1x1--> out_channels                          (a function on the grid)
    global code     c = MLP( (1/|D|) int h(r) dr ) -> code_dim           (constant over the domain)

The raw prototype (the mean latent of K support images) is a blurred, noisy template of its class;
this encoder lets the score operator learn what a class's prototype *says*: a sharpened local
template (as a one-hot model's learned class embedding is) and a global code that reaches every
point of the latent at once (the class identity, which a pointwise lifting of the template can only
see through the Fourier layers). It is time-independent, so a sampler could compute it once.

Every piece is a continuum operator (pointwise maps, Fourier multipliers on fixed modes, mode-1
position features, a quadrature mean), so the encoding does not depend on the grid the prototype is
evaluated on once the grid resolves its modes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..grid import Grid
from ..models.embedding import periodic_features
from ..models.spectral import SpectralConv, normalize_modes

__all__ = ["PrototypeEncoder", "build_prototype_encoder"]


class PrototypeEncoder(nn.Module):
    """The prototype's local features and global code, ``(B, C, *S) -> (B, out_dim, *S)``.

    Parameters
    ----------
    channels : latent channels ``C`` of the prototype
    width : hidden channels of the Fourier layers
    modes : Fourier modes kept per axis (fsdiff's convention, ``|k_i| <= K_i``)
    n_layers : Fourier layers (``>= 1``)
    out_channels : channels of the local features (``>= 0``)
    code_dim : size of the global code, broadcast as constant channels (``>= 0``)
    """

    def __init__(self, channels: int, width: int = 32, modes: int | Sequence[int] = (3, 6), n_layers: int = 2,
                 out_channels: int = 8, code_dim: int = 16):
        super().__init__()
        for name, v, lo in (("channels", channels, 1), ("width", width, 1), ("n_layers", n_layers, 1),
                            ("out_channels", out_channels, 0), ("code_dim", code_dim, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}")
        if out_channels + code_dim < 1:
            raise ValueError("the encoder needs out_channels + code_dim >= 1")
        self.channels, self.width, self.n_layers = channels, width, n_layers
        self.modes = normalize_modes(modes)
        self.out_channels, self.code_dim = out_channels, code_dim
        d = len(self.modes)
        self.lift = nn.Linear(channels + 2 * d, width)
        self.spectral = nn.ModuleList(SpectralConv(width, width, self.modes, bias=False) for _ in range(n_layers))
        self.skip = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
        self.to_local = nn.Linear(width, out_channels) if out_channels else None
        self.to_code = (nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, code_dim))
                        if code_dim else None)

    @property
    def out_dim(self) -> int:
        """Channels of the encoding: ``out_channels + code_dim``."""
        return self.out_channels + self.code_dim

    @property
    def spec(self) -> dict:
        return {"type": "prototype_encoder", "channels": self.channels, "width": self.width, "modes": list(self.modes),
                "n_layers": self.n_layers, "out_channels": self.out_channels, "code_dim": self.code_dim}

    def forward(self, p: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``p (B, C, *grid.shape) -> (B, out_channels + code_dim, *grid.shape)``: local features, then the code."""
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an fsdiff.Grid, got {type(grid).__name__}")
        if grid.ndim != len(self.modes):
            raise ValueError(f"encoder works on {len(self.modes)}-D grids (modes={self.modes}); got {grid!r}")
        if p.ndim != grid.ndim + 2 or p.shape[1] != self.channels or tuple(p.shape[2:]) != tuple(grid.shape):
            raise ValueError(f"prototype has shape {tuple(p.shape)}; expected (batch, {self.channels}, "
                             f"{', '.join(map(str, grid.shape))})")
        B = p.shape[0]
        pos = periodic_features(grid, p.dtype, p.device)
        h = self.lift(torch.cat([p, pos.expand(B, *pos.shape)], dim=1).movedim(1, -1)).movedim(-1, 1)
        for conv, skip in zip(self.spectral, self.skip):
            h = F.gelu(conv(h) + skip(h.movedim(1, -1)).movedim(-1, 1))
        parts = []
        if self.to_local is not None:
            parts.append(self.to_local(h.movedim(1, -1)).movedim(-1, 1))
        if self.to_code is not None:
            code = self.to_code(grid.integrate(h) / grid.volume)  # (B, code_dim)
            parts.append(code.reshape(B, self.code_dim, *[1] * grid.ndim).expand(B, self.code_dim, *grid.shape))
        return torch.cat(parts, dim=1)


def build_prototype_encoder(spec: dict) -> PrototypeEncoder:
    """Rebuild a :class:`PrototypeEncoder` from its ``spec``."""
    if spec.get("type") != "prototype_encoder":
        raise ValueError(f"not a prototype encoder spec: {spec.get('type')!r}")
    return PrototypeEncoder(spec["channels"], spec["width"], tuple(spec["modes"]), spec["n_layers"],
                            spec["out_channels"], spec["code_dim"])
