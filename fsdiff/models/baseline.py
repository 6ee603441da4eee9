"""Baseline score operator: neuraloperator's ``FNO`` with ``t`` as a constant input channel.

This is the multilevel-diffusion paper's recipe (no per-sample FiLM; neuraloperator has
none). Mode mapping: fsdiff ``modes=(K_1, ..., K_d)`` (keep ``|k_i| <= K_i``) is
neuraloperator ``n_modes=(2K_1+1, ..., 2K_d+1)``: its ``SpectralConv`` keeps ``n`` centred
rows on the non-last axes and ``n // 2 + 1`` rfft columns on the last, so odd ``n`` gives
the symmetric set. (neuraloperator's ``n_modes=(14, 14)`` keeps ``|k_1| <= 7, 0 <= k_2 <= 7``.)

Caveats of neuraloperator 2.0.0 (measured): its ``SpectralConv`` undoes its ``fftshift``
with ``fftshift`` instead of ``ifftshift``, which is wrong when a non-last axis has odd
length, and it keeps the Nyquist mode of even grids with ``N_i <= 2K_i``. Use even grids
with ``N_i >= 2K_i + 2`` on the non-last axes with this baseline. Its default ramp
positional embedding breaks invariance, so it is switched off.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from ..grid import Grid
from .._checks import batch_times
from .spectral import normalize_modes

__all__ = ["NeuralopFNOScore", "import_neuralop"]


def import_neuralop():
    """Import ``neuralop`` without letting it change the global warnings filters."""
    with warnings.catch_warnings():  # neuralop calls warnings.filterwarnings("once") at import
        import neuralop
        import neuralop.layers.spectral_convolution  # noqa: F401
        import neuralop.models  # noqa: F401
    return neuralop


class NeuralopFNOScore(nn.Module):
    """``neuralop.models.FNO`` adapted to the score protocol, ``t`` as an extra constant channel.

    Parameters
    ----------
    in_channels, width, modes, n_layers, cond_channels
        As :class:`~fsdiff.models.FNOScore` (``modes`` in fsdiff's convention).
    lifting_channel_ratio, projection_channel_ratio : float
        neuraloperator's lifting/projection MLP widths relative to ``width``.
    use_channel_mlp : bool
        neuraloperator's per-block channel MLP (its default, True).
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        modes: int | Sequence[int] = (12, 12),
        n_layers: int = 4,
        cond_channels: int = 0,
        lifting_channel_ratio: float = 2.0,
        projection_channel_ratio: float = 2.0,
        use_channel_mlp: bool = True,
    ):
        super().__init__()
        self.modes = normalize_modes(modes)
        for name, v, lo in (("in_channels", in_channels, 1), ("width", width, 1), ("n_layers", n_layers, 1),
                            ("cond_channels", cond_channels, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        self.in_channels, self.width, self.n_layers, self.cond_channels = in_channels, width, n_layers, cond_channels
        self.lifting_channel_ratio = float(lifting_channel_ratio)
        self.projection_channel_ratio = float(projection_channel_ratio)
        self.use_channel_mlp = bool(use_channel_mlp)
        FNO = import_neuralop().models.FNO
        self.fno = FNO(
            n_modes=tuple(2 * K + 1 for K in self.modes),
            in_channels=in_channels + cond_channels + 1,
            out_channels=in_channels,
            hidden_channels=width,
            n_layers=n_layers,
            lifting_channel_ratio=self.lifting_channel_ratio,
            projection_channel_ratio=self.projection_channel_ratio,
            positional_embedding=None,
            use_channel_mlp=self.use_channel_mlp,
        )

    @property
    def ndim(self) -> int:
        return len(self.modes)

    @property
    def spec(self) -> dict:
        """Constructor arguments as plain data, with ``"type": "neuralop_fno"``."""
        return {
            "type": "neuralop_fno",
            "in_channels": self.in_channels,
            "width": self.width,
            "modes": list(self.modes),
            "n_layers": self.n_layers,
            "cond_channels": self.cond_channels,
            "lifting_channel_ratio": self.lifting_channel_ratio,
            "projection_channel_ratio": self.projection_channel_ratio,
            "use_channel_mlp": self.use_channel_mlp,
        }

    def state_dict(self, *args, **kwargs):
        """Tensors only: drops the ``_metadata`` entry (constructor kwargs incl. functions) that
        neuraloperator's ``BaseModel`` adds, so the dict loads with ``weights_only=True``."""
        sd = super().state_dict(*args, **kwargs)
        sd.pop("_metadata", None)
        return sd

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, grid: Grid,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x_t (B, C, *grid.shape), t (B,) -> eta_hat (B, C, *grid.shape)``."""
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an fsdiff.Grid, got {type(grid).__name__}")
        if grid.ndim != self.ndim:
            raise ValueError(f"model works in {self.ndim}-D (modes={self.modes}) but the grid {grid!r} is {grid.ndim}-D")
        grid.check(x_t, "x_t", min_leading=2, finite=True)
        if x_t.ndim != grid.ndim + 2 or x_t.shape[1] != self.in_channels:
            raise ValueError(
                f"x_t has shape {tuple(x_t.shape)}; expected (batch, {self.in_channels}, {', '.join(map(str, grid.shape))})"
            )
        B = x_t.shape[0]
        parts = [x_t]
        if self.cond_channels:
            expected = (B, self.cond_channels, *grid.shape)
            if cond is None or tuple(cond.shape) != expected:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond has shape {got}; expected {expected}")
            parts.append(cond.to(x_t.dtype))
        elif cond is not None:
            raise ValueError("model was built with cond_channels=0 but cond was given")
        t = batch_times(t, B, x_t.dtype, x_t.device)
        parts.append(t.reshape(B, 1, *([1] * grid.ndim)).expand(B, 1, *grid.shape))
        return self.fno(torch.cat(parts, dim=1))
