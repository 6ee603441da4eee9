"""Fourier-space channel mixing on kept modes (the FNO spectral convolution), CPU-friendly.

Mode convention
---------------
``modes = (K_1, ..., K_d)`` keeps the symmetric set ``|k_i| <= K_i`` on every axis: in rfft
layout ``(2K_1 + 1) x ... x (2K_{d-1} + 1) x (K_d + 1)`` coefficients. This is neuraloperator's
``neuralop.layers.spectral_convolution.SpectralConv(n_modes=(2K_1 + 1, ..., 2K_d + 1))``:
it keeps ``n`` centred rows on non-last axes and ``n // 2 + 1`` rfft columns on the last,
so odd ``n = 2K + 1`` is the symmetric set (its ``n_modes=(14, 14)`` keeps ``|k_1| <= 7,
0 <= k_2 <= 7``). :meth:`SpectralConv.load_neuralop` copies its weights.

A grid with fewer modes than ``modes`` uses only the modes it has: ``k_i = min(K_i,
(N_i - 1) // 2)`` (fsdiff drops the Nyquist mode of even grids, see :mod:`fsdiff.grid`),
with the *same* weights for each mode, so the layer is the same operator at every grid.
neuraloperator keeps the Nyquist mode of an even grid when ``N_i <= 2 K_i``; the two agree
on every other grid.

Speed
-----
The contraction ``out[b, o, k] = sum_i x[b, i, k] w[i, o, k]`` is done on the kept modes
packed contiguously, ``(M, B, C_in) @ (M, C_in, C_out)`` as one complex batched matmul
(the weight is stored packed, so no copy), and the FFTs are pruned: rfft on the last axis, keep
``k_d + 1`` columns, then a complex FFT along the other axes only on those columns.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpectralConv", "normalize_modes"]


def normalize_modes(modes: int | Sequence[int]) -> tuple[int, ...]:
    """``modes`` as a tuple of positive ints (an int means 1-D)."""
    if isinstance(modes, bool):
        raise TypeError(f"modes must be an int or a sequence of ints, got {modes!r}")
    if isinstance(modes, int):
        modes = (modes,)
    try:
        out = tuple(int(k) for k in modes)
    except TypeError as err:
        raise TypeError(f"modes must be an int or a sequence of ints, got {modes!r}") from err
    if not 1 <= len(out) <= 3 or any(k < 0 for k in out) or any(k != m for k, m in zip(out, modes)):
        raise ValueError(f"modes must be 1 to 3 non-negative integers (|k_i| <= K_i), got {modes!r}")
    return out


def kept_modes(modes: Sequence[int], spatial: Sequence[int]) -> tuple[int, ...]:
    """Modes actually used on a grid of shape ``spatial``: ``min(K_i, (N_i - 1) // 2)``."""
    return tuple(min(K, (n - 1) // 2) for K, n in zip(modes, spatial))


def _forward_modes(x: torch.Tensor, kept: Sequence[int]) -> torch.Tensor:
    """Kept Fourier coefficients of real ``x (..., *S)``: ``(..., 2k_1+1, ..., k_d+1)`` complex.

    Non-last axes are ordered ``0, 1, .., k, -k, .., -1`` (fft order restricted to kept modes).
    """
    d = len(kept)
    xh = torch.fft.rfft(x, dim=-1, norm="forward")[..., : kept[-1] + 1]
    for ax in range(-2, -d - 1, -1):
        k = kept[ax]
        xh = torch.fft.fft(xh, dim=ax, norm="forward")
        n = xh.shape[ax]
        xh = torch.cat([xh.narrow(ax, 0, k + 1), xh.narrow(ax, n - k, k)], dim=ax) if k else xh.narrow(ax, 0, 1)
    return xh


def _inverse_modes(yh: torch.Tensor, kept: Sequence[int], spatial: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`_forward_modes` with all other modes zero: ``-> (..., *spatial)`` real."""
    d = len(kept)
    for ax in range(-d, -1):
        k, n = kept[ax], spatial[ax]
        zshape = list(yh.shape)
        zshape[ax] = n - 2 * k - 1
        z = yh.new_zeros(zshape)
        parts = [yh.narrow(ax, 0, k + 1), z] + ([yh.narrow(ax, k + 1, k)] if k else [])
        yh = torch.fft.ifft(torch.cat(parts, dim=ax), dim=ax, norm="forward")
    n_last = spatial[-1]
    yh = F.pad(yh, (0, n_last // 2 + 1 - yh.shape[-1]))
    return torch.fft.irfft(yh, n=n_last, dim=-1, norm="forward")


class SpectralConv(nn.Module):
    """Spectral convolution ``x -> irfft(W_k rfft(x)_k)`` on the modes ``|k_i| <= K_i``.

    Parameters
    ----------
    in_channels, out_channels : int
    modes : int or sequence of int
        ``(K_1, ..., K_d)``, kept modes per axis (symmetric, see module docstring).
    bias : bool
        Add a learned constant per output channel (as neuraloperator's ``SpectralConv``).

    Notes
    -----
    ``weight`` is a real parameter ``(2K_1+1, ..., K_d+1, in, out, 2)`` (real/imag last), modes
    in fft order (``0, 1, .., K, -K, .., -1`` on non-last axes), so that on grids holding all
    kept modes ``view_as_complex(weight).reshape(M, in, out)`` is the packed weight, no copy.
    :meth:`neuralop_weight` / :meth:`load_neuralop` convert to and from neuraloperator's
    centred ``(in, out, 2K_1+1, ..., K_d+1)``. Init: complex normal with std
    ``sqrt(2 / (in + out))`` as neuraloperator.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | Sequence[int], bias: bool = True):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, out={out_channels}")
        self.modes = normalize_modes(modes)
        shape = tuple(2 * K + 1 for K in self.modes[:-1]) + (self.modes[-1] + 1,)
        std = (2.0 / (self.in_channels + self.out_channels)) ** 0.5
        # complex normal with E|w|^2 = std^2: real and imaginary parts each std / sqrt(2)
        self.weight = nn.Parameter(torch.randn(*shape, self.in_channels, self.out_channels, 2) * (std / 2**0.5))
        self.bias = nn.Parameter(torch.randn(self.out_channels) * std) if bias else None

    @property
    def ndim(self) -> int:
        return len(self.modes)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}, bias={self.bias is not None}"

    def packed_weight(self, kept: Sequence[int]) -> torch.Tensor:
        """Complex weights of the kept modes ``(M, C_in, C_out)`` in :func:`_forward_modes` order."""
        w = self.weight
        for ax, (K, k) in enumerate(zip(self.modes[:-1], kept[:-1])):
            if k < K:
                w = torch.cat([w.narrow(ax, 0, k + 1), w.narrow(ax, 2 * K + 1 - k, k)], dim=ax)
        if kept[-1] < self.modes[-1]:
            w = w.narrow(self.ndim - 1, 0, kept[-1] + 1)
        w = torch.view_as_complex(w if w.is_contiguous() else w.contiguous())
        return w.reshape(-1, self.in_channels, self.out_channels)

    def forward(
        self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the layer, optionally followed by a per-sample affine map ``scale * y + shift``.

        Parameters
        ----------
        x : ``(B, C_in, *S)`` real tensor, ``len(S) == len(modes)``.
        scale, shift : (B, C_out) or None
            Per-sample, per-channel FiLM, applied in Fourier space (a constant is mode 0), so it
            costs no pass over the grid.

        Returns
        -------
        (B, C_out, *S)
        """
        d = self.ndim
        if x.ndim != d + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SpectralConv expects (batch, {self.in_channels}, *{d} spatial dims); got shape {tuple(x.shape)}"
            )
        B, spatial = x.shape[0], tuple(x.shape[2:])
        kept = kept_modes(self.modes, spatial)
        if x.dtype in (torch.float16, torch.bfloat16):  # no complex half types; bf16 FFTs are unsupported (CPU, cuFFT)
            x = x.float()
        xh = _forward_modes(x, kept)  # (B, I, *kept_shape)
        kshape = xh.shape[2:]
        xp = xh.reshape(B, self.in_channels, -1).permute(2, 0, 1)  # (M, B, I)
        w = self.packed_weight(kept)
        yp = torch.bmm(xp, w if w.dtype == xp.dtype else w.to(xp.dtype))  # (M, B, O)
        const = self.bias
        if const is not None:
            const = const.to(x.dtype).expand(B, self.out_channels)
            if scale is not None:
                const = const * scale
        if shift is not None:
            const = shift if const is None else const + shift
        if const is not None:  # a constant function is the (real) coefficient of mode 0, index 0
            head = yp[:1] if scale is None else yp[:1] * scale
            tail = yp[1:] if scale is None else yp[1:] * scale
            yp = torch.cat([head + const, tail], dim=0)
        elif scale is not None:
            yp = yp * scale
        yc = yp.permute(1, 2, 0).reshape(B, self.out_channels, *kshape)
        return _inverse_modes(yc, kept, spatial)

    def _centre_perm(self) -> list[torch.Tensor]:
        """Per non-last axis: fft-order index of each centred position ``K + k``."""
        return [torch.cat([torch.arange(K + 1, 2 * K + 1), torch.arange(0, K + 1)]) for K in self.modes[:-1]]

    @torch.no_grad()
    def neuralop_weight(self) -> torch.Tensor:
        """The weight in neuraloperator's centred complex layout ``(in, out, 2K_1+1, ..., K_d+1)``."""
        w = torch.view_as_complex(self.weight.detach().contiguous())
        for ax, idx in enumerate(self._centre_perm()):
            w = w.index_select(ax, idx)
        return w.permute(self.ndim, self.ndim + 1, *range(self.ndim))

    @torch.no_grad()
    def load_neuralop(self, conv: nn.Module) -> "SpectralConv":
        """Copy weights from ``neuralop.layers.spectral_convolution.SpectralConv(n_modes=(2K+1, ...))``."""
        w = conv.weight
        w = w.to_tensor() if not torch.is_tensor(w) else w
        expected = (self.in_channels, self.out_channels) + tuple(self.weight.shape[: self.ndim])
        if tuple(w.shape) != expected:
            raise ValueError(f"neuralop weight has shape {tuple(w.shape)}, expected {expected}")
        w = w.to(torch.complex64).permute(*range(2, 2 + self.ndim), 0, 1)  # (*modes, in, out), centred
        for ax, K in enumerate(self.modes[:-1]):  # centred -> fft order: 0..K, -K..-1
            w = w.index_select(ax, torch.cat([torch.arange(K, 2 * K + 1), torch.arange(0, K)]))
        self.weight.copy_(torch.view_as_real(w.contiguous()))
        if self.bias is not None:
            if getattr(conv, "bias", None) is None:
                raise ValueError("this layer has a bias but the neuralop layer has none")
            self.bias.copy_(conv.bias.reshape(-1))
        return self
