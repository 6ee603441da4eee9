"""Synthetic function data sets with ground truth at every resolution.

All randomness comes from the ``generator`` passed to ``sample``; with the same generator
state every grid sees the *same* underlying random function:

* :class:`GaussianRandomField` -- ``mean + covariance.sample``: the exact law ``N(mean, C)``
  on the grid's modes; nested in the **Fourier** sense (coarse = Fourier restriction of fine),
  or, with ``max_mode``, a band-limited field evaluated pointwise (nested **pointwise**).
* :class:`LogNormalField`, :class:`ThresholdedField` -- pointwise transforms ``exp(g)`` and
  ``tanh(k (g - level) / std)`` of a band-limited GRF ``g``. The band-limited ``g`` is a
  trigonometric polynomial with ``|k_i| <= max_mode`` whose values at the grid points are
  computed exactly at *any* N (aliased onto the grid's DFT, not truncated), and vertex-centred
  grid points are nested, so the 32² field equals the 128² field subsampled pointwise.
* :class:`DarcyFlow` -- the solution ``u`` of periodic ``-div(a grad u) = f`` with a random
  coefficient ``a`` (pointwise nested). ``u`` is computed by a discretisation, so it is not
  nested exactly: it *converges* as N grows (second order for smooth ``a``).

Band-limited fields
-------------------
``g = P_K G`` where ``G ~ N(0, C)`` is the nested sample of ``covariance`` and ``P_K`` keeps
``|k_i| <= K = max_mode``; its law is ``N(0, C_K)`` with ``C_K`` the covariance restricted to
those modes, and its pointwise variance is ``v_K = sum_{|k_i|<=K} lambda_k / |D|``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..covariance import Covariance, Matern, covariance_from_dict
from ..grid import Grid
from .._checks import positive_int
from .base import FunctionDataset

__all__ = [
    "band_limited_sample",
    "GaussianRandomField",
    "LogNormalField",
    "ThresholdedField",
    "DarcyFlow",
    "darcy_forcing",
    "solve_darcy",
]

DEFAULT_MAX_MODE = 32


def _band_grid(grid: Grid, max_mode: int) -> Grid:
    return Grid((2 * max_mode + 1,) * grid.ndim, grid.length)


def band_limited_sample(
    covariance: Covariance,
    grid: Grid,
    n: int,
    max_mode: int,
    channels: int = 1,
    generator: torch.Generator | None = None,
    zero_mean: bool = False,
) -> torch.Tensor:
    """Values at ``grid``'s points of the band-limited GRF ``P_K G``, ``(n, channels, *grid.shape)`` float64.

    The coefficients ``|k_i| <= K`` are drawn on the odd grid ``2K+1`` (nested sampling) and
    folded modulo ``N_i`` onto the target DFT (exact point evaluation of a trigonometric
    polynomial, aliasing included), so the result at every N is the same function sampled
    at that grid's points. ``zero_mean`` drops the constant mode ``k = 0`` (the spatial mean).
    """
    K = int(max_mode)
    if K < 0:
        raise ValueError(f"max_mode must be a non-negative integer; got {max_mode}")
    band = _band_grid(grid, K)
    s = covariance.sample(band, n, channels, generator=generator, dtype=torch.float64)
    c = torch.fft.fftn(s, dim=band.spatial_dims, norm="forward")
    if zero_mean:
        c[(Ellipsis,) + (0,) * grid.ndim] = 0
    k = torch.fft.fftfreq(2 * K + 1, d=1.0 / (2 * K + 1)).round().long()
    for i, N in enumerate(grid.shape):
        dim = c.ndim - grid.ndim + i
        shape = list(c.shape)
        shape[dim] = N
        out = c.new_zeros(shape)
        out.index_add_(dim, k % N, c)
        c = out
    return torch.fft.ifftn(c, dim=grid.spatial_dims, norm="forward").real


def _band_variance(covariance: Covariance, ndim: int, length: tuple[float, ...], max_mode: int) -> float:
    return covariance.pointwise_variance(Grid((2 * int(max_mode) + 1,) * ndim, length))


def _cov(c: Covariance | dict) -> Covariance:
    if isinstance(c, dict):
        return covariance_from_dict(c)
    if not isinstance(c, Covariance):
        raise TypeError(f"covariance must be a Covariance or its to_dict() table; got {type(c).__name__}")
    return c


class _CovarianceDataset(FunctionDataset):
    covariance: Covariance

    @classmethod
    def _from_params(cls, params: dict) -> FunctionDataset:
        params = dict(params)
        if "covariance" in params:
            params["covariance"] = covariance_from_dict(params["covariance"])
        try:
            return cls(**params)
        except TypeError as e:
            raise ValueError(f"bad parameters for data set {cls.type_name!r}: {e}") from None


class GaussianRandomField(_CovarianceDataset):
    """Gaussian random functions ``u = mean + G``, ``G ~ N(0, covariance)``: exact law, exact score.

    Without ``max_mode``, ``sample`` is ``mean + covariance.sample(grid, ...)``: on each grid
    the law is exactly ``N(mean, C)`` restricted to the grid's modes, and grids are nested in
    the Fourier sense (``resample(fine, fine_grid, coarse_grid) == coarse``). With ``max_mode=K``
    the field is the band-limited ``P_K G`` evaluated at the grid points (nested pointwise;
    law ``N(mean, C_K)``). ``mean`` is a constant (added to every point).
    """

    type_name = "gaussian_random_field"

    def __init__(self, covariance: Covariance | dict, mean: float | None = None, channels: int = 1,
                 max_mode: int | None = None):
        self.covariance = _cov(covariance)
        self.mean = None if mean is None else float(mean)
        self.channels = positive_int(channels, "channels")
        self.max_mode = None if max_mode is None else int(max_mode)
        if self.max_mode is not None and self.max_mode < 0:
            raise ValueError(f"max_mode must be non-negative; got {max_mode}")

    def sample(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, channels, *grid.shape)`` float32."""
        n = positive_int(n)
        if self.max_mode is None:
            self.covariance.require_trace_class(grid.ndim)
            u = self.covariance.sample(grid, n, self.channels, generator=generator, dtype=torch.float64)
        else:
            u = band_limited_sample(self.covariance, grid, n, self.max_mode, self.channels, generator)
        if self.mean is not None:
            u = u + self.mean
        return u.float()

    def pointwise_variance(self, grid: Grid) -> float:
        """Exact ``Var u(x)`` of samples on ``grid``."""
        if self.max_mode is None:
            return self.covariance.pointwise_variance(grid)
        return _band_variance(self.covariance, grid.ndim, grid.length, self.max_mode)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.type_name, "covariance": self.covariance.to_dict(), "channels": self.channels}
        if self.mean is not None:
            d["mean"] = self.mean
        if self.max_mode is not None:
            d["max_mode"] = self.max_mode
        return d


class _PointwiseField(_CovarianceDataset):
    """A pointwise transform of the band-limited GRF ``g = mean + P_K G``."""

    def __init__(self, covariance: Covariance | dict, mean: float = 0.0, max_mode: int = DEFAULT_MAX_MODE,
                 channels: int = 1):
        self.covariance = _cov(covariance)
        self.mean = float(mean)
        self.max_mode = int(max_mode)
        if self.max_mode < 0:
            raise ValueError(f"max_mode must be non-negative; got {max_mode}")
        self.channels = positive_int(channels, "channels")

    def latent(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The Gaussian field ``g`` at the grid points, ``(n, channels, *grid.shape)`` float64."""
        n = positive_int(n)
        return self.mean + band_limited_sample(self.covariance, grid, n, self.max_mode, self.channels, generator)

    def latent_variance(self, grid: Grid) -> float:
        """Pointwise variance ``v_K`` of ``g`` (independent of the resolution)."""
        return _band_variance(self.covariance, grid.ndim, grid.length, self.max_mode)

    def transform(self, g: torch.Tensor, grid: Grid) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, channels, *grid.shape)`` float32."""
        return self.transform(self.latent(grid, n, generator), grid).float()

    def _base_dict(self) -> dict:
        return {"type": self.type_name, "covariance": self.covariance.to_dict(), "mean": self.mean,
                "max_mode": self.max_mode, "channels": self.channels}


class LogNormalField(_PointwiseField):
    """Log-normal random functions ``u = exp(g)``, ``g = mean + P_K G`` band-limited Gaussian.

    Pointwise ``u(x)`` is log-normal with ``E u = exp(mean + v/2)`` and
    ``Var u = (exp(v) - 1) exp(2 mean + v)``, ``v = v_K`` the variance of ``g``. With
    ``standardize=True`` the samples are ``(u - E u) / sd(u)`` (pointwise mean 0, variance 1).
    Nested pointwise: the same seed gives the same function at every grid (exactly, up to
    float rounding).
    """

    type_name = "log_normal"

    def __init__(self, covariance: Covariance | dict, mean: float = 0.0, max_mode: int = DEFAULT_MAX_MODE,
                 standardize: bool = False, channels: int = 1):
        super().__init__(covariance, mean, max_mode, channels)
        self.standardize = bool(standardize)

    def moments(self, grid: Grid) -> tuple[float, float]:
        """Pointwise ``(E u(x), sd u(x))`` of the unstandardised field on ``grid``'s domain."""
        v = self.latent_variance(grid)
        m = math.exp(self.mean + v / 2)
        return m, math.sqrt(math.expm1(v)) * m

    def transform(self, g: torch.Tensor, grid: Grid) -> torch.Tensor:
        u = torch.exp(g)
        if self.standardize:
            m, s = self.moments(grid)
            u = (u - m) / s
        return u

    def to_dict(self) -> dict:
        return {**self._base_dict(), "standardize": self.standardize}


class ThresholdedField(_PointwiseField):
    """Smoothed level sets ``u = tanh(sharpness * (g - level) / sqrt(v))`` of a band-limited GRF.

    ``g = mean + P_K G``; dividing by its pointwise standard deviation ``sqrt(v)`` makes
    ``sharpness`` scale free (large values approach the indicator ``sign(g - level)``).
    Values lie in ``(-1, 1)``; nested pointwise like :class:`LogNormalField`.
    """

    type_name = "thresholded"

    def __init__(self, covariance: Covariance | dict, level: float = 0.0, sharpness: float = 5.0,
                 mean: float = 0.0, max_mode: int = DEFAULT_MAX_MODE, channels: int = 1):
        super().__init__(covariance, mean, max_mode, channels)
        self.level = float(level)
        self.sharpness = float(sharpness)
        if not (math.isfinite(self.sharpness) and self.sharpness > 0):
            raise ValueError(f"sharpness must be a finite positive number; got {sharpness}")

    def transform(self, g: torch.Tensor, grid: Grid) -> torch.Tensor:
        sd = math.sqrt(max(self.latent_variance(grid), 1e-300))
        return torch.tanh(self.sharpness * (g - self.level) / sd)

    def to_dict(self) -> dict:
        return {**self._base_dict(), "level": self.level, "sharpness": self.sharpness}


# --------------------------------------------------------------------------- Darcy flow
def darcy_forcing(grid: Grid, scale: float = 1.0) -> np.ndarray:
    """``f(x) = scale * lambda_1 * prod_i cos(2 pi x_i / L_i)`` at the grid points, shape ``grid.shape``.

    ``lambda_1 = 4 pi² sum_i L_i^-2``, so that ``a = 1`` gives ``u = prod_i cos(2 pi x_i / L_i)``
    in the continuum. ``f`` has mean zero (the solvability condition of the periodic problem).
    """
    lam = 4 * math.pi**2 * sum(1.0 / L**2 for L in grid.length)
    mesh = grid.mesh(torch.float64).numpy()
    f = np.ones(grid.shape)
    for i, L in enumerate(grid.length):
        f = f * np.cos(2 * math.pi * mesh[i] / L)
    f = scale * lam * f
    return f - f.mean()


def solve_darcy(a: np.ndarray, f: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Solve periodic ``-div(a grad u) = f`` with mean-zero ``u`` on one grid; arrays of shape ``grid.shape``.

    Cell-centred finite volumes (the 5-point stencil in 2-D) with harmonic-mean face
    coefficients ``2 a_j a_{j+1} / (a_j + a_{j+1})``, assembled with ``scipy.sparse``. The
    periodic operator annihilates constants, so ``u`` is pinned at one point, solved by sparse
    LU, and shifted to mean zero; ``f`` must have (discrete) mean zero. Error ``O(h²)`` for
    smooth ``a``; ``O(h)`` near jumps of a piecewise-constant ``a``.
    """
    a = np.asarray(a, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    if a.shape != f.shape or a.ndim != len(spacing):
        raise ValueError(f"solve_darcy: a {a.shape}, f {f.shape} and spacing {spacing} do not match")
    if not (np.isfinite(a).all() and (a > 0).all()):
        raise ValueError("solve_darcy: the coefficient a must be finite and positive everywhere")
    if abs(f.mean()) > 1e-10 * (np.abs(f).max() + 1e-300):
        raise ValueError(f"solve_darcy: periodic problem needs mean-zero f; got mean {f.mean():.3e}")
    n = a.size
    idx = np.arange(n).reshape(a.shape)
    rows, cols, vals = [], [], []
    diag = np.zeros(n)
    for ax, h in enumerate(spacing):
        nb = np.roll(idx, -1, axis=ax).ravel()
        a_nb = np.roll(a, -1, axis=ax)
        w = (2 * a * a_nb / (a + a_nb)).ravel() / h**2
        p = idx.ravel()
        np.add.at(diag, p, w)
        np.add.at(diag, nb, w)
        rows += [p, nb]
        cols += [nb, p]
        vals += [-w, -w]
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    A = scipy.sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    A = A.tocsc()[1:, 1:]
    u = np.zeros(n)
    u[1:] = scipy.sparse.linalg.splu(A).solve(f.ravel()[1:])
    u -= u.mean()
    return u.reshape(a.shape)


class DarcyFlow(_CovarianceDataset):
    """Periodic Darcy flow ``-div(a grad u) = f`` on the torus, with a random coefficient ``a``.

    * ``a`` from the band-limited GRF ``g = P_K G`` (``G ~ N(0, covariance)``, default
      ``Matern(alpha=2, tau=3)``, i.e. ``(-Laplacian + 9)^-2`` as in the FNO paper):
      ``coefficient="threshold"`` gives ``a = high`` where ``g >= 0`` and ``low`` elsewhere
      (12 / 3 as in the FNO paper); ``"lognormal"`` gives ``a = exp(g)``. ``a`` at the grid
      points is the same function at every resolution (nested pointwise). With ``zero_mean``
      (default, as in the FNO data generator) the constant mode of ``g`` is dropped, so the
      level set splits the domain (with it, about a third of thresholded draws are constant).
    * ``f`` is the fixed mean-zero :func:`darcy_forcing` (periodic solvability), and ``u`` is
      the mean-zero solution, computed by :func:`solve_darcy` at the requested resolution.
      ``u`` is **not** nested: it converges as N grows (``O(h²)`` for the smooth log-normal
      coefficient; about ``O(h)`` for the discontinuous thresholded one).
    * ``output``: ``"u"`` (1 channel), ``"a"`` (1 channel) or ``"both"`` (channels ``[a, u]``).

    One sparse LU per sample: about 0.2-0.5 s at 128², 1.5-3 s at 256² here (2 CPU cores).
    """

    type_name = "darcy_flow"

    def __init__(self, covariance: Covariance | dict | None = None, coefficient: str = "threshold",
                 high: float = 12.0, low: float = 3.0, max_mode: int = DEFAULT_MAX_MODE,
                 forcing_scale: float = 1.0, output: str = "u", zero_mean: bool = True):
        self.covariance = Matern(alpha=2.0, tau=3.0) if covariance is None else _cov(covariance)
        if coefficient not in ("threshold", "lognormal"):
            raise ValueError(f"coefficient must be 'threshold' or 'lognormal'; got {coefficient!r}")
        if output not in ("u", "a", "both"):
            raise ValueError(f"output must be 'u', 'a' or 'both'; got {output!r}")
        self.coefficient = coefficient
        self.high, self.low = float(high), float(low)
        if not (self.high > 0 and self.low > 0 and math.isfinite(self.high) and math.isfinite(self.low)):
            raise ValueError(f"high and low must be finite and positive; got {high}, {low}")
        self.max_mode = int(max_mode)
        if self.max_mode < 0:
            raise ValueError(f"max_mode must be non-negative; got {max_mode}")
        self.forcing_scale = float(forcing_scale)
        self.output = output
        self.zero_mean = bool(zero_mean)
        self.channels = 2 if output == "both" else 1

    def coefficient_field(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The coefficient ``a`` at the grid points, ``(n, 1, *grid.shape)`` float64."""
        g = band_limited_sample(self.covariance, grid, positive_int(n), self.max_mode, 1, generator, self.zero_mean)
        if self.coefficient == "lognormal":
            return torch.exp(g)
        return torch.where(g >= 0, torch.full_like(g, self.high), torch.full_like(g, self.low))

    def solve(self, a: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Solutions for coefficients ``a`` of shape ``(n, 1, *grid.shape)``; returns the same shape, float64."""
        grid.check(a, "a", min_leading=2)
        f = darcy_forcing(grid, self.forcing_scale)
        a_np = a.detach().double().cpu().numpy()
        u = np.stack([solve_darcy(a_np[i, 0], f, grid.spacing) for i in range(a_np.shape[0])])
        return torch.from_numpy(u).unsqueeze(1)

    def sample(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, channels, *grid.shape)`` float32 (``[a, u]`` for ``output="both"``)."""
        a = self.coefficient_field(grid, n, generator)
        if self.output == "a":
            return a.float()
        u = self.solve(a, grid)
        return (u if self.output == "u" else torch.cat([a, u], dim=1)).float()

    def to_dict(self) -> dict:
        return {"type": self.type_name, "covariance": self.covariance.to_dict(), "coefficient": self.coefficient,
                "high": self.high, "low": self.low, "max_mode": self.max_mode,
                "forcing_scale": self.forcing_scale, "output": self.output, "zero_mean": self.zero_mean}
