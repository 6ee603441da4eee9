"""Periodic grids: coordinates, wavenumbers, quadrature, Fourier resampling, xarray I/O.

A :class:`Grid` is the periodic box ``[0, L_1) x ... x [0, L_d)`` seen through
``N_1 x ... x N_d`` vertex-centred points ``x_j = j L / N``. Function values live in
tensors of shape ``(batch, channels, *grid.shape)``.

Conventions
-----------
* Fourier transforms use ``norm="forward"``: the coefficient of mode ``k`` is
  ``u_hat_k = N^-d sum_x u(x) exp(-2 pi i k.x / L)``, which converges to the continuum
  Fourier coefficient ``L^-d int u exp(-2 pi i k.x/L) dx`` and so means the same thing
  at every resolution. Mode ``k`` has angular wavenumber ``omega_k = 2 pi k / L``.
* **Nyquist convention**: a grid with ``N_i`` points per axis keeps the modes
  ``|k_i| <= (N_i - 1) // 2``. On even grids the Nyquist mode ``N_i / 2`` is dropped
  (it is neither a sine nor a cosine of the continuum and breaks exactness). With it
  dropped, restriction, prolongation and nested sampling are exact.
* Quadrature is the periodic trapezoid rule (spectrally accurate for smooth periodic
  functions): ``inner(u, v) = prod(L_i / N_i) * sum(u * v)``.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Sequence

import numpy as np
import torch

from ._checks import check_finite

__all__ = ["Grid", "resample", "subsample", "to_dataarray", "from_dataarray"]

_AXIS_NAMES = ("x", "y", "z")


def _integer_shape(shape) -> tuple[int, ...]:
    """``shape`` (an integer or a sequence of integers) as a tuple; 16.5 or "16" is a GridError, not floored."""
    from .errors import GridError

    items = [shape] if not isinstance(shape, (Sequence, np.ndarray)) or isinstance(shape, str) else list(shape)
    out = []
    for n in items:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer, float, np.floating)) \
                or not float(n).is_integer():
            raise GridError(f"Grid shape must be whole numbers of points per axis; got {shape!r}")
        out.append(int(n))
    return tuple(out)


class Grid:
    """A periodic box ``[0, L)^d`` with ``N`` vertex-centred points per axis.

    Parameters
    ----------
    shape : int or sequence of int
        Points per axis, ``d = len(shape)`` in {1, 2, 3}.
    length : float or sequence of float
        Side lengths ``L_i`` (default 1.0 for every axis).

    Examples
    --------
    >>> g = Grid((64, 64))
    >>> g.shape, g.ndim, g.coords[0][:2]
    ((64, 64), 2, tensor([0.0000, 0.0156], dtype=torch.float64))
    """

    def __init__(self, shape: int | Sequence[int], length: float | Sequence[float] = 1.0):
        shape_t = _integer_shape(shape)
        if not 1 <= len(shape_t) <= 3:
            raise ValueError(f"Grid supports 1, 2 or 3 dimensions; got shape {shape_t}")
        if any(n < 2 for n in shape_t):
            raise ValueError(f"Grid needs at least 2 points per axis; got shape {shape_t}")
        if isinstance(length, (int, float, np.floating, np.integer)):
            length_t = (float(length),) * len(shape_t)
        else:
            length_t = tuple(float(v) for v in length)
        if len(length_t) != len(shape_t):
            raise ValueError(f"length {length_t} has {len(length_t)} entries, shape {shape_t} has {len(shape_t)}")
        if not all(math.isfinite(v) and v > 0 for v in length_t):
            raise ValueError(f"Grid lengths must be finite and positive; got {length_t}")
        self._shape = shape_t
        self._length = length_t

    # ----------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple[int, ...]:
        """Points per axis ``(N_1, ..., N_d)``."""
        return self._shape

    @property
    def length(self) -> tuple[float, ...]:
        """Side lengths ``(L_1, ..., L_d)``."""
        return self._length

    @property
    def ndim(self) -> int:
        """Spatial dimension d."""
        return len(self._shape)

    @property
    def volume(self) -> float:
        """Domain volume ``prod L_i``."""
        return math.prod(self._length)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Grid spacing ``L_i / N_i`` per axis."""
        return tuple(L / n for L, n in zip(self._length, self._shape))

    @property
    def cell_volume(self) -> float:
        """Quadrature weight of every point, ``prod L_i / N_i``."""
        return math.prod(self.spacing)

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        """Negative tensor dims holding the spatial axes, e.g. ``(-2, -1)`` in 2-D."""
        return tuple(range(-self.ndim, 0))

    @property
    def max_modes(self) -> tuple[int, ...]:
        """Largest kept ``|k_i|`` per axis: ``(N_i - 1) // 2`` (Nyquist dropped)."""
        return tuple((n - 1) // 2 for n in self._shape)

    @property
    def rfft_shape(self) -> tuple[int, ...]:
        """Shape of the rfft spectrum: ``(N_1, ..., N_{d-1}, N_d // 2 + 1)``."""
        return self._shape[:-1] + (self._shape[-1] // 2 + 1,)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return _AXIS_NAMES[: self.ndim]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self._shape == other._shape and self._length == other._length

    def __hash__(self) -> int:
        return hash((self._shape, self._length))

    def __repr__(self) -> str:
        if all(L == 1.0 for L in self._length):
            return f"Grid({self._shape})"
        return f"Grid({self._shape}, length={self._length})"

    def with_shape(self, shape: int | Sequence[int]) -> "Grid":
        """The same domain at another resolution (an int means that many points on every axis)."""
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),) * self.ndim
        return Grid(shape, self._length)

    def to_dict(self) -> dict:
        return {"shape": list(self._shape), "length": list(self._length)}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(d["shape"]), d.get("length", 1.0))

    # ----------------------------------------------------------- coordinates
    @cached_property
    def coords(self) -> tuple[torch.Tensor, ...]:
        """Point coordinates per axis, ``x_j = j L / N``, each of shape ``(N_i,)`` float64."""
        return tuple(torch.arange(n, dtype=torch.float64) * (L / n) for n, L in zip(self._shape, self._length))

    def mesh(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Coordinates of every point, shape ``(d, *shape)``."""
        return torch.stack(torch.meshgrid(*self.coords, indexing="ij")).to(dtype)

    # ----------------------------------------------------------- wavenumbers
    @cached_property
    def wavenumbers(self) -> tuple[torch.Tensor, ...]:
        """Integer wavenumbers per axis in rfft layout, broadcastable to :attr:`rfft_shape`.

        Axis i < d-1 holds ``fftfreq(N_i) * N_i``; the last axis holds ``0 .. N_d // 2``.
        """
        ks = []
        for i, n in enumerate(self._shape):
            if i < self.ndim - 1:
                k = torch.fft.fftfreq(n, d=1.0 / n).round().to(torch.int64)
            else:
                k = torch.arange(n // 2 + 1, dtype=torch.int64)
            view = [1] * self.ndim
            view[i] = -1
            ks.append(k.reshape(view))
        return tuple(ks)

    @cached_property
    def omega_squared(self) -> torch.Tensor:
        """``|omega_k|^2 = sum_i (2 pi k_i / L_i)^2`` in rfft layout, float64."""
        out = torch.zeros(self.rfft_shape, dtype=torch.float64)
        for k, L in zip(self.wavenumbers, self._length):
            out = out + (2 * math.pi * k.to(torch.float64) / L) ** 2
        return out

    @cached_property
    def mode_mask(self) -> torch.Tensor:
        """Boolean mask of kept modes in rfft layout (Nyquist modes of even axes are False)."""
        mask = torch.ones(self.rfft_shape, dtype=torch.bool)
        for k, K in zip(self.wavenumbers, self.max_modes):
            mask = mask & (k.abs() <= K)
        return mask

    @cached_property
    def rfft_weights(self) -> torch.Tensor:
        """Multiplicity of each rfft entry in a Parseval sum (1 on the ``k_d = 0`` plane, else 2), float64."""
        w = torch.full(self.rfft_shape, 2.0, dtype=torch.float64)
        w[..., 0] = 1.0
        if self._shape[-1] % 2 == 0:
            w[..., -1] = 1.0
        return w

    # -------------------------------------------------------------- checking
    def check(self, u: torch.Tensor, name: str = "u", *, min_leading: int = 1, finite: bool = False) -> torch.Tensor:
        """Raise ``ValueError`` unless ``u`` has shape ``(..., *self.shape)`` with ``min_leading`` leading dims."""
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
        if u.ndim < self.ndim + min_leading or tuple(u.shape[-self.ndim:]) != self._shape:
            lead = "(batch, channels, " if min_leading >= 2 else "(..., "
            raise ValueError(
                f"{name} has shape {tuple(u.shape)} but the grid {self!r} expects {lead}{', '.join(map(str, self._shape))})"
            )
        if finite:
            check_finite(u, name)
        return u

    # ------------------------------------------------------------ quadrature
    def integrate(self, u: torch.Tensor) -> torch.Tensor:
        """``int u dx`` over the domain: ``(..., *shape) -> (...)``."""
        self.check(u, min_leading=0)
        return u.sum(dim=self.spatial_dims) * self.cell_volume

    def inner(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """L² inner product over channels and space: ``(..., C, *shape) x2 -> (...)``."""
        self.check(u, "u")
        self.check(v, "v")
        if u.shape != v.shape:
            raise ValueError(f"inner: shapes differ, {tuple(u.shape)} vs {tuple(v.shape)}")
        return (u * v).sum(dim=(-self.ndim - 1,) + self.spatial_dims) * self.cell_volume

    def norm(self, u: torch.Tensor) -> torch.Tensor:
        """L² norm over channels and space: ``(..., C, *shape) -> (...)``."""
        self.check(u, "u")
        return (u.square().sum(dim=(-self.ndim - 1,) + self.spatial_dims) * self.cell_volume).sqrt()

    # --------------------------------------------------------------- Fourier
    def rfft(self, u: torch.Tensor) -> torch.Tensor:
        """Forward-normalised real FFT: ``(..., *shape) -> (..., *rfft_shape)`` complex."""
        self.check(u, min_leading=0)
        return torch.fft.rfftn(u, dim=self.spatial_dims, norm="forward")

    def irfft(self, u_hat: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`rfft`: ``(..., *rfft_shape) -> (..., *shape)`` real."""
        if tuple(u_hat.shape[-self.ndim:]) != self.rfft_shape:
            raise ValueError(f"spectrum has shape {tuple(u_hat.shape)}, expected (..., {self.rfft_shape})")
        return torch.fft.irfftn(u_hat, s=self._shape, dim=self.spatial_dims, norm="forward")

    def spectral_multiply(self, u: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
        """Apply a real Fourier multiplier given in rfft layout: ``irfft(m * rfft(u))``."""
        m = multiplier.to(device=u.device, dtype=u.dtype if u.is_floating_point() else torch.float32)
        return self.irfft(self.rfft(u) * m)


def _mode_index(n_src: int, n_dst: int, keep: int, last_axis: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the modes ``|k| <= keep`` along one axis in the src and dst spectra."""
    if last_axis:
        idx = torch.arange(keep + 1)
        return idx, idx
    pos = torch.arange(keep + 1)
    neg = torch.arange(-keep, 0)
    return torch.cat([pos, neg % n_src]), torch.cat([pos, neg % n_dst])


def resample(u: torch.Tensor, src: Grid, dst: Grid) -> torch.Tensor:
    """Fourier restriction (truncation) or prolongation (zero padding) from ``src`` to ``dst``.

    Modes ``|k_i| <= min(K_src_i, K_dst_i)`` are copied unchanged (coefficients are
    forward-normalised, so they mean the same at both resolutions); all others are zero.
    Exact on functions band-limited to the coarser grid, so coarse -> fine -> coarse is the
    identity. If ``src == dst`` the input is returned unchanged.

    Shapes: ``(..., *src.shape) -> (..., *dst.shape)``.
    """
    if src.ndim != dst.ndim:
        raise ValueError(f"cannot resample between {src.ndim}-D {src!r} and {dst.ndim}-D {dst!r}")
    if not np.allclose(src.length, dst.length, rtol=1e-12, atol=0):
        raise ValueError(f"grids describe different domains: lengths {src.length} vs {dst.length}")
    src.check(u, min_leading=0, finite=True)
    if src == dst:
        return u
    u_hat = src.rfft(u)
    out = u_hat.new_zeros(u_hat.shape[: u.ndim - src.ndim] + dst.rfft_shape)
    src_idx, dst_idx = [], []
    for i, (ns, nd, Ks, Kd) in enumerate(zip(src.shape, dst.shape, src.max_modes, dst.max_modes)):
        s, d = _mode_index(ns, nd, min(Ks, Kd), last_axis=i == src.ndim - 1)
        shape = [1] * src.ndim
        shape[i] = -1
        src_idx.append(s.reshape(shape).to(u.device))
        dst_idx.append(d.reshape(shape).to(u.device))
    out[(Ellipsis, *dst_idx)] = u_hat[(Ellipsis, *src_idx)]
    return dst.irfft(out)


def subsample(u: torch.Tensor, grid: Grid, factor: int | Sequence[int]) -> tuple[torch.Tensor, Grid]:
    """Plain pointwise subsampling ``u[..., ::f, ::f]`` (no anti-aliasing).

    Vertex-centred points make the coarse points a subset of the fine ones. Each
    ``N_i`` must be divisible by its factor. Returns ``(u_coarse, coarse_grid)``.
    """
    f = (int(factor),) * grid.ndim if isinstance(factor, (int, np.integer)) else tuple(int(v) for v in factor)
    if len(f) != grid.ndim or any(v < 1 for v in f):
        raise ValueError(f"subsample factor {factor} must be positive, one per axis of {grid!r}")
    if any(n % v for n, v in zip(grid.shape, f)):
        raise ValueError(f"grid shape {grid.shape} is not divisible by factor {f}")
    grid.check(u, min_leading=0)
    sl = (Ellipsis,) + tuple(slice(None, None, v) for v in f)
    return u[sl], Grid(tuple(n // v for n, v in zip(grid.shape, f)), grid.length)


def to_dataarray(u: torch.Tensor, grid: Grid, name: str = "u", attrs: dict | None = None):
    """Wrap ``(sample, channel, *grid.shape)`` values as an ``xarray.DataArray``.

    Dims are ``sample, channel, x[, y[, z]]`` with physical coordinates; the grid's lengths
    are stored in ``attrs["length"]`` so :func:`from_dataarray` rebuilds it exactly.
    """
    import xarray as xr

    grid.check(u, min_leading=2)
    if u.ndim != grid.ndim + 2:
        raise ValueError(f"expected (sample, channel, *{grid.shape}); got shape {tuple(u.shape)}")
    dims = ("sample", "channel") + grid.axis_names
    coords = {ax: c.numpy() for ax, c in zip(grid.axis_names, grid.coords)}
    coords["sample"] = np.arange(u.shape[0])
    coords["channel"] = np.arange(u.shape[1])
    all_attrs = {"length": list(grid.length), "grid_shape": list(grid.shape)}
    all_attrs.update(attrs or {})
    return xr.DataArray(u.detach().cpu().numpy(), dims=dims, coords=coords, name=name, attrs=all_attrs)


def from_dataarray(da) -> tuple[torch.Tensor, Grid]:
    """Inverse of :func:`to_dataarray`: returns ``(values, grid)``."""
    spatial = [d for d in da.dims if d in _AXIS_NAMES]
    if list(da.dims[:2]) != ["sample", "channel"] or not spatial or list(da.dims[2:]) != spatial:
        raise ValueError(f"expected dims (sample, channel, x[, y[, z]]); got {da.dims}")
    shape = tuple(da.sizes[d] for d in spatial)
    if "length" in da.attrs:
        length = tuple(np.atleast_1d(da.attrs["length"]).astype(float))
    else:  # infer from uniform vertex-centred coordinates
        length = tuple(float(da[d].values[1] - da[d].values[0]) * n for d, n in zip(spatial, shape))
    return torch.as_tensor(np.asarray(da.values)), Grid(shape, length)
