"""Spectral covariance operators: Gaussian measures on L² diagonal in the Fourier basis.

A covariance ``Q`` has eigenfunctions ``phi_k(x) = L^(-d/2) exp(2 pi i k.x / L)`` (orthonormal
in L² of the periodic box) and eigenvalues ``lambda_k`` that belong to the *continuum*
operator: a grid keeps the modes it can represent (see :mod:`fsdiff.grid` for the Nyquist
convention) and nothing is ever normalised by the number of grid points. A sample is

    u = sum_k sqrt(lambda_k) xi_k phi_k,   xi_k standard complex normal, xi_{-k} = conj(xi_k),

so ``E ||u||² = sum_k lambda_k = trace(Q)`` and the pointwise variance is
``sum_k lambda_k / |D|``. In forward-normalised Fourier coefficients,
``E |u_hat_k|² = lambda_k / |D|`` at every resolution.

Nested sampling
---------------
Random numbers are drawn shell by shell, ``s = max_i |k_i|``, in a fixed order of the
half-lattice that does not depend on the grid. A grid draws every shell up to its largest
kept mode and discards modes outside its box. So with one generator seed the sample on a
coarse grid is *exactly* the Fourier restriction of the sample on a fine grid.

Families
--------
``Matern``, ``LaplacianPower``, ``SquaredExponential``, ``White`` and ``RandomSpectral``,
combined with ``+`` (sums) and ``*`` by a positive number (scalings).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.integrate
import scipy.special
import torch

from .grid import Grid
from ._checks import check_finite as _check_finite
from ._checks import check_float_dtype, check_generator

__all__ = [
    "Covariance",
    "Matern",
    "LaplacianPower",
    "SquaredExponential",
    "White",
    "RandomSpectral",
    "SumCovariance",
    "ScaledCovariance",
    "covariance_from_dict",
]

#: Default relative cutoff of the pseudo-inverse: modes with lambda <= rtol * max(lambda) are
#: treated as outside the range of Q (their inverse square root is set to zero).
DEFAULT_RTOL = 1e-12


def _finite_positive(name: str, value: float, allow_zero: bool = False) -> float:
    value = float(value)
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number; got {value}")
    return value


def _lengths(ndim: int | Grid, length: float | Sequence[float]) -> tuple[int, tuple[float, ...]]:
    if isinstance(ndim, Grid):
        return ndim.ndim, ndim.length
    ndim = int(ndim)
    if isinstance(length, (int, float)):
        return ndim, (float(length),) * ndim
    return ndim, tuple(float(v) for v in length)


# --------------------------------------------------------------------------- sampling plan
@lru_cache(maxsize=64)
def _half_lattice(max_shell: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical half-lattice wavevectors ordered by shell, and cumulative shell counts.

    Returns ``k`` of shape ``(M, ndim)`` (int64; zero mode first, then shell 1, 2, ...; in
    each shell lexicographic order) and ``offsets`` of shape ``(max_shell + 2,)`` with
    shell ``s`` occupying rows ``offsets[s]:offsets[s+1]``. The half-lattice keeps the zero
    mode and, of every pair ``{k, -k}``, the one whose last non-zero component is positive.
    """
    S = max_shell
    axes = [np.arange(-S, S + 1)] * (ndim - 1) + [np.arange(0, S + 1)]
    k = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, ndim)
    # last non-zero component positive, or k = 0
    nz = k != 0
    last_nz = np.where(nz.any(1), ndim - 1 - np.argmax(nz[:, ::-1], axis=1), -1)
    sign = np.where(last_nz >= 0, k[np.arange(len(k)), np.maximum(last_nz, 0)], 1)
    k = k[sign > 0]
    shell = np.abs(k).max(axis=1)
    order = np.lexsort(tuple(k[:, i] for i in reversed(range(ndim))) + (shell,))
    k = k[order]
    counts = np.bincount(np.abs(k).max(axis=1), minlength=S + 1)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return k, offsets


class _SamplePlan:
    """Index bookkeeping to scatter shell-ordered draws into a grid's rfft spectrum."""

    def __init__(self, grid: Grid):
        d = grid.ndim
        block = _shell_block(d)
        # draw whole blocks of shells so that every generator call is grid independent
        S = (max(grid.max_modes) // block + 1) * block - 1
        k, offsets = _half_lattice(S, d)
        inside = np.all(np.abs(k) <= np.array(grid.max_modes), axis=1)
        self.n_draw = int(offsets[-1])
        self.offsets = offsets
        self.keep = torch.from_numpy(np.nonzero(inside)[0])
        kk = k[inside]
        self.k = torch.from_numpy(kk)
        shape = np.array(grid.rfft_shape)
        strides = np.array([int(np.prod(shape[i + 1 :])) for i in range(d)])
        self.flat = torch.from_numpy(((kk % np.array(grid.shape)) * strides).sum(1))
        # modes on the k_d = 0 plane (other than k = 0) also fill their mirror -k
        on_plane = (kk[:, -1] == 0) & np.any(kk != 0, axis=1)
        self.mirror_src = torch.from_numpy(np.nonzero(on_plane)[0])
        self.mirror_flat = torch.from_numpy((((-kk[on_plane]) % np.array(grid.shape)) * strides).sum(1))
        self.is_zero = torch.from_numpy(np.all(kk == 0, axis=1))
        self.n_rfft = int(np.prod(shape))
        # square-ish grids keep every drawn mode: then the shell-ordered draws need no gather
        self.keep_all = bool(inside.all())
        # rfft entries not written by the scatter (dropped Nyquist modes): zeroed explicitly,
        # so the spectrum buffer need not be zero-filled as a whole
        filled = np.zeros(self.n_rfft, dtype=bool)
        filled[self.flat.numpy()] = True
        filled[self.mirror_flat.numpy()] = True
        self.unfilled = torch.from_numpy(np.nonzero(~filled)[0])
        self._device_cache: dict = {}
        self._scale_cache: dict = {}

    def indices(self, device: torch.device):
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = tuple(
                t.to(device) for t in (self.keep, self.flat, self.mirror_src, self.mirror_flat, self.unfilled)
            )
        return self._device_cache[key]


@lru_cache(maxsize=64)
def _plan(grid: Grid) -> _SamplePlan:
    return _SamplePlan(grid)


def _shell_block(ndim: int) -> int:
    # One generator call per shell (per 32 shells in 1-D, where shells hold one mode).
    return 32 if ndim == 1 else 1


# --------------------------------------------------------------------------- base class
class Covariance:
    """A covariance operator diagonal in the Fourier basis of a periodic box.

    Subclasses implement :meth:`spectrum` (eigenvalues of integer wavevectors), and
    :meth:`is_trace_class`; everything else is shared.
    """

    #: name used in :meth:`to_dict`
    kind: str = ""

    # -- to implement ---------------------------------------------------------
    def spectrum(self, k: torch.Tensor, length: Sequence[float]) -> torch.Tensor:
        """Eigenvalues ``lambda_k`` for integer wavevectors ``k`` of shape ``(..., d)``, float64 ``(...)``."""
        raise NotImplementedError

    def is_trace_class(self, ndim: int) -> bool:
        """Whether ``sum_k lambda_k < inf`` on the d-dimensional torus (Q defines a Gaussian measure on L²)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Plain-data description, inverted by :func:`covariance_from_dict`."""
        raise NotImplementedError

    # -- algebra --------------------------------------------------------------
    def __add__(self, other: "Covariance") -> "SumCovariance":
        if not isinstance(other, Covariance):
            return NotImplemented
        return SumCovariance(self, other)

    def __mul__(self, factor: float) -> "ScaledCovariance":
        if isinstance(factor, Covariance):
            return NotImplemented
        return ScaledCovariance(self, factor)

    __rmul__ = __mul__

    # -- spectra on a grid ----------------------------------------------------
    def eigenvalues(self, grid: Grid, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Eigenvalues on the grid's kept modes in rfft layout, shape ``grid.rfft_shape``; zero on dropped modes."""
        k = torch.stack(torch.broadcast_tensors(*grid.wavenumbers), dim=-1)
        lam = self.spectrum(k, grid.length) * grid.mode_mask
        return lam.to(dtype)

    def pointwise_variance(self, grid: Grid) -> float:
        """``E u(x)²`` of samples on this grid: ``sum_kept lambda_k / |D|``."""
        return float((self.eigenvalues(grid) * grid.rfft_weights).sum() / grid.volume)

    def trace(self, ndim: int | Grid = 2, length: float | Sequence[float] = 1.0) -> float:
        """Continuum trace ``sum_{k in Z^d} lambda_k`` (``inf`` if not trace class).

        A lattice sum over ``|omega| <= R`` plus the integral of the (radial) spectrum
        beyond ``R``; relative accuracy ~1e-8 for the families here.
        """
        d, L = _lengths(ndim, length)
        if not self.is_trace_class(d):
            return math.inf
        return self._lattice_trace(d, L)

    def _lattice_trace(self, d: int, L: tuple[float, ...]) -> float:
        K = {1: 1 << 18, 2: 1024, 3: 80}[d]
        axes = [torch.arange(-K, K + 1, dtype=torch.int64)] * d
        total = 0.0
        # chunk over the first axis to bound memory
        R2 = min((2 * math.pi * K / Li) ** 2 for Li in L)
        for chunk in torch.split(axes[0], max(1, (1 << 22) // (2 * K + 1) ** (d - 1))):
            kk = torch.stack(torch.meshgrid(chunk, *axes[1:], indexing="ij"), dim=-1)
            om2 = sum((2 * math.pi * kk[..., i].double() / L[i]) ** 2 for i in range(d))
            lam = self.spectrum(kk, L)
            total += float(lam[om2 <= R2].sum())
        return total + self._tail(d, L, math.sqrt(R2))

    def _tail(self, d: int, L: tuple[float, ...], R: float) -> float:
        """``(prod L / (2 pi)^d) |S^{d-1}| int_R^inf lambda(rho) rho^{d-1} d rho`` for radial spectra."""
        density = math.prod(L) / (2 * math.pi) ** d
        sphere = 2 * math.pi ** (d / 2) / math.gamma(d / 2)

        def f(rho: float) -> float:
            k = torch.zeros(1, d, dtype=torch.float64)
            k[0, 0] = rho * L[0] / (2 * math.pi)
            return float(self.spectrum(k, L)[0]) * rho ** (d - 1)

        # substitute rho = R / s (s in (0, 1]) and normalise by the value at R: the integrand is
        # O(1) and quad's absolute tolerance (1.5e-8 by default) cannot swallow a tiny tail
        h0 = f(R) * R
        if h0 == 0.0:
            return 0.0
        val, _ = scipy.integrate.quad(lambda s: f(R / s) * R / (s * s * h0), 0.0, 1.0, epsabs=0.0, epsrel=1e-10, limit=200)
        return density * sphere * val * h0

    def pointwise_variance_limit(self, ndim: int | Grid = 2, length: float | Sequence[float] = 1.0) -> float:
        """Continuum pointwise variance ``trace(Q) / |D|``."""
        d, L = _lengths(ndim, length)
        return self.trace(d, L) / math.prod(L)

    def with_pointwise_variance(self, variance: float, ndim: int | Grid = 2, length: float | Sequence[float] = 1.0) -> "ScaledCovariance":
        """This covariance scaled so that the continuum pointwise variance equals ``variance``."""
        v = self.pointwise_variance_limit(ndim, length)
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{self!r} is not trace class in {_lengths(ndim, length)[0]}-D; cannot normalise its pointwise variance")
        return ScaledCovariance(self, _finite_positive("variance", variance) / v)

    def require_trace_class(self, ndim: int) -> "Covariance":
        """Return ``self`` or raise ``ValueError`` if Q is not trace class in ``ndim`` dimensions."""
        if not self.is_trace_class(ndim):
            raise ValueError(
                f"{self!r} is not trace class in {ndim}-D: its samples are not functions in L² "
                "(white noise does not exist there). Use e.g. Matern(alpha > d/2) or LaplacianPower(power > d/2)."
            )
        return self

    # -- operators ------------------------------------------------------------
    def _multiplier(self, grid: Grid, power: float, rtol: float = DEFAULT_RTOL) -> torch.Tensor:
        lam = self.eigenvalues(grid)
        if power >= 0:
            return lam**power
        cut = rtol * float(lam.max()) if lam.numel() else 0.0
        out = torch.zeros_like(lam)
        pos = lam > cut
        out[pos] = lam[pos] ** power
        return out

    def apply(self, u: torch.Tensor, grid: Grid, check_finite: bool = False) -> torch.Tensor:
        """``Q u``: ``(..., *grid.shape) -> (..., *grid.shape)``; ``check_finite`` refuses NaN / Inf in ``u``."""
        if check_finite:
            _check_finite(u, "u")
        return grid.spectral_multiply(u, self._multiplier(grid, 1.0))

    def sqrt(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``Q^{1/2} u``: ``(..., *grid.shape) -> (..., *grid.shape)``."""
        return grid.spectral_multiply(u, self._multiplier(grid, 0.5))

    def inv_sqrt(self, u: torch.Tensor, grid: Grid, rtol: float = DEFAULT_RTOL) -> torch.Tensor:
        """Pseudo-inverse ``Q^{-1/2} u`` on the range of Q.

        Modes with ``lambda_k <= rtol * max_k lambda_k`` (on this grid) are mapped to zero;
        the default ``rtol = 1e-12`` keeps every mode a float64 spectrum resolves.
        """
        return grid.spectral_multiply(u, self._multiplier(grid, -0.5, rtol))

    def inv(self, u: torch.Tensor, grid: Grid, rtol: float = DEFAULT_RTOL) -> torch.Tensor:
        """Pseudo-inverse ``Q^{-1} u`` (same cutoff as :meth:`inv_sqrt`)."""
        return grid.spectral_multiply(u, self._multiplier(grid, -1.0, rtol))

    def cameron_martin_norm(self, u: torch.Tensor, grid: Grid, rtol: float = DEFAULT_RTOL) -> torch.Tensor:
        """``||Q^{-1/2} u||_{L²}`` over channels and space: ``(B, C, *grid.shape) -> (B,)``.

        Computed in Fourier (Parseval), with the pseudo-inverse cutoff of :meth:`inv_sqrt`;
        content of ``u`` outside the range of Q is ignored.
        """
        grid.check(u, min_leading=2)
        inv = self._multiplier(grid, -1.0, rtol) * grid.rfft_weights * grid.volume
        power = grid.rfft(u.double()).abs().square()
        return (power * inv.to(u.device)).sum(dim=(-grid.ndim - 1,) + grid.spatial_dims).sqrt().to(u.dtype)

    # -- sampling ---------------------------------------------------------------
    def sample(
        self,
        grid: Grid,
        n: int,
        channels: int = 1,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` independent real samples of ``N(0, Q)``, shape ``(n, channels, *grid.shape)``.

        O(N log N). Nested: with the same generator state, the result on a coarse grid is the
        Fourier restriction of the result on a finer grid of the same domain.
        """
        if n < 1 or channels < 1:
            raise ValueError(f"n and channels must be positive; got n={n}, channels={channels}")
        check_float_dtype(dtype)
        check_generator(generator)
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        plan = _plan(grid)
        keep, flat, mirror_src, mirror_flat, unfilled = plan.indices(device)
        real = torch.float64 if dtype == torch.float64 else torch.float32
        # shell-ordered standard normals (n_draw, n, channels, 2): every shell one generator call
        z = torch.empty(plan.n_draw, n, channels, 2, dtype=real, device=device)
        block = _shell_block(grid.ndim)
        offs = plan.offsets
        for s in range(0, len(offs) - 1, block):
            a, b = int(offs[s]), int(offs[min(s + block, len(offs) - 1)])
            z[a:b].normal_(generator=generator)
        if not plan.keep_all:
            z = z.index_select(0, keep)
        # scale Re and Im in place (real view: complex-by-real broadcasting is slow on CPU);
        # the zero mode (row 0 of the shell order) is real
        z.mul_(self._cached_draw_scale(grid, plan, device, real)[:, None, None, None])
        z[0, ..., 1] = 0
        coeff = torch.view_as_complex(z)
        spec = torch.empty(plan.n_rfft, n, channels, dtype=coeff.dtype, device=device)
        spec.index_copy_(0, flat, coeff)
        spec.index_copy_(0, mirror_flat, coeff.index_select(0, mirror_src).conj())
        if len(unfilled):
            spec.index_fill_(0, unfilled, 0)
        # batch dims trailing in memory: irfftn transforms strided lines, output is contiguous
        spec = spec.reshape(*grid.rfft_shape, n, channels).movedim((-2, -1), (0, 1))
        out = torch.fft.irfftn(spec, s=grid.shape, dim=grid.spatial_dims, norm="forward")
        return out.to(dtype)

    def _cached_draw_scale(self, grid: Grid, plan: _SamplePlan, device: torch.device, real: torch.dtype) -> torch.Tensor:
        """:meth:`_draw_scale` on ``device`` in ``real``, cached on the plan under the covariance's parameters.

        The key is the JSON of :meth:`to_dict`, so a changed parameter is a new key; a covariance
        without ``to_dict`` is not cached. (Small elementwise ops can cost milliseconds each when
        the thread pool has to be woken on a busy machine; the hot path avoids them.)
        """
        try:
            key = (json.dumps(self.to_dict(), sort_keys=True), str(device), real)
        except (NotImplementedError, TypeError, ValueError):
            return self._draw_scale(grid, plan).to(device=device, dtype=real)
        scale = plan._scale_cache.get(key)
        if scale is None:
            if len(plan._scale_cache) >= 16:
                plan._scale_cache.clear()
            scale = plan._scale_cache[key] = self._draw_scale(grid, plan).to(device=device, dtype=real)
        return scale

    def _draw_scale(self, grid: Grid, plan: _SamplePlan) -> torch.Tensor:
        """Standard deviation of Re and Im of each kept coefficient: ``sqrt(lambda / (2 |D|))`` (zero mode: ``sqrt(lambda / |D|)``)."""
        lam = self.spectrum(plan.k, grid.length)
        var = lam / grid.volume
        var = torch.where(plan.is_zero, var, var / 2)
        return var.clamp_min(0).sqrt()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class _Radial(Covariance):
    """A covariance whose eigenvalues depend on ``|omega_k|²`` only."""

    def radial(self, omega_sq: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def spectrum(self, k: torch.Tensor, length: Sequence[float]) -> torch.Tensor:
        om2 = torch.zeros(k.shape[:-1], dtype=torch.float64)
        for i, L in enumerate(length):
            om2 = om2 + (2 * math.pi * k[..., i].to(torch.float64) / L) ** 2
        return self.radial(om2)

    def _lattice_trace(self, d: int, L: tuple[float, ...]) -> float:
        # |omega|^2 is a sum of per-axis terms: build it by broadcasting (no wavevector table)
        # and use lambda(k) = lambda(-k) on the last axis to halve the work
        K = {1: 1 << 18, 2: 1024, 3: 80}[d]
        R2 = min((2 * math.pi * K / Li) ** 2 for Li in L)
        k = torch.arange(-K, K + 1, dtype=torch.float64)
        w = [(2 * math.pi * k / Li) ** 2 for Li in L[:-1]]
        last = (2 * math.pi * torch.arange(0, K + 1, dtype=torch.float64) / L[-1]) ** 2
        mult = torch.full((K + 1,), 2.0, dtype=torch.float64)
        mult[0] = 1.0
        rest = torch.zeros((), dtype=torch.float64)
        for wi in w[1:]:
            rest = rest[..., None] + wi
        total = 0.0
        rows = w[0] if w else torch.zeros(1, dtype=torch.float64)
        for chunk in torch.split(rows, max(1, (1 << 21) // ((2 * K + 1) ** max(d - 2, 0) * (K + 1)))):
            om2 = (chunk.reshape(-1, *([1] * (d - 1))) + rest[None, ..., None] + last) if d > 1 else last
            lam = torch.where(om2 <= R2, self.radial(om2), torch.zeros((), dtype=torch.float64))
            total += float((lam * mult).sum())
        return total + self._tail(d, L, math.sqrt(R2))


class Matern(_Radial):
    """Matérn / Bessel covariance ``sigma² (tau² - Laplacian)^(-alpha)``.

    Eigenvalues ``lambda_k = sigma² (tau² + |omega_k|²)^(-alpha)``, ``omega_k = 2 pi k / L``.
    Trace class in d dimensions iff ``2 alpha > d``. Use :meth:`with_pointwise_variance`
    to scale it to a chosen pointwise variance.
    """

    kind = "matern"

    def __init__(self, alpha: float = 2.0, tau: float = 3.0, sigma: float = 1.0):
        self.alpha = _finite_positive("alpha", alpha)
        self.tau = _finite_positive("tau", tau)
        self.sigma = _finite_positive("sigma", sigma)

    def radial(self, omega_sq: torch.Tensor) -> torch.Tensor:
        return self.sigma**2 * (self.tau**2 + omega_sq) ** (-self.alpha)

    def is_trace_class(self, ndim: int) -> bool:
        return 2 * self.alpha > ndim

    def to_dict(self) -> dict:
        return {"type": self.kind, "alpha": self.alpha, "tau": self.tau, "sigma": self.sigma}


class LaplacianPower(_Radial):
    """Laplacian power ``scale * (-Laplacian)^(-power)`` on mean-zero functions.

    ``lambda_k = scale * |omega_k|^(-2 power)`` for ``k != 0``. **Zero mode**: ``(-Laplacian)``
    is not invertible on constants, so ``lambda_0 = 0``: samples have zero spatial mean,
    and the pseudo-inverses ignore the mean. Trace class iff ``2 power > d``.
    """

    kind = "laplacian_power"

    def __init__(self, power: float = 2.0, scale: float = 1.0):
        self.power = _finite_positive("power", power)
        self.scale = _finite_positive("scale", scale)

    def radial(self, omega_sq: torch.Tensor) -> torch.Tensor:
        safe = torch.where(omega_sq > 0, omega_sq, torch.ones_like(omega_sq))
        return torch.where(omega_sq > 0, self.scale * safe ** (-self.power), torch.zeros_like(omega_sq))

    def is_trace_class(self, ndim: int) -> bool:
        return 2 * self.power > ndim

    def to_dict(self) -> dict:
        return {"type": self.kind, "power": self.power, "scale": self.scale}


class SquaredExponential(_Radial):
    """Heat-kernel (squared-exponential) decay ``lambda_k = sigma² exp(-lengthscale² |omega_k|² / 2)``.

    This is ``sigma² exp(lengthscale² Laplacian / 2)``, the heat semigroup at time
    ``lengthscale² / 2``; samples are analytic. Trace class in every dimension.
    """

    kind = "squared_exponential"

    def __init__(self, lengthscale: float = 0.1, sigma: float = 1.0):
        self.lengthscale = _finite_positive("lengthscale", lengthscale)
        self.sigma = _finite_positive("sigma", sigma)

    def radial(self, omega_sq: torch.Tensor) -> torch.Tensor:
        return self.sigma**2 * torch.exp(-0.5 * self.lengthscale**2 * omega_sq)

    def is_trace_class(self, ndim: int) -> bool:
        return True

    def to_dict(self) -> dict:
        return {"type": self.kind, "lengthscale": self.lengthscale, "sigma": self.sigma}


class White(_Radial):
    """The identity, ``lambda_k = sigma²``: white noise. **Not trace class** in any dimension.

    It exists only on a grid: the pointwise variance is ``sigma² N^d / |D|`` and grows
    without bound under refinement. Kept as the baseline that function-space diffusion fixes.
    """

    kind = "white"

    def __init__(self, sigma: float = 1.0):
        self.sigma = _finite_positive("sigma", sigma)

    def radial(self, omega_sq: torch.Tensor) -> torch.Tensor:
        return torch.full_like(omega_sq, self.sigma**2)

    def is_trace_class(self, ndim: int) -> bool:
        return False

    def to_dict(self) -> dict:
        return {"type": self.kind, "sigma": self.sigma}


class RandomSpectral(Covariance):
    """A fixed random spectral multiplier on finitely many modes (the multilevel paper's "FNO prior").

    ``Q = R R*`` where ``R`` multiplies mode ``k`` by a fixed random complex weight ``w_k``
    for ``|k_i| <= modes_i`` and by zero elsewhere, so ``lambda_k = |w_k|²`` (symmetric in
    ``k -> -k``). Finite rank, hence trace class; its pseudo-inverse acts on those modes only.
    The weights are ``scale * xi_k * (1 + |k|²)^(-decay/2)`` with ``xi_k`` standard complex
    normal drawn once from ``torch.Generator().manual_seed(seed)``.
    """

    kind = "random_spectral"

    def __init__(self, modes: Sequence[int] = (12, 12), scale: float = 1.0, decay: float = 1.0, seed: int = 0):
        self.modes = tuple(int(m) for m in modes)
        if not self.modes or any(m < 0 for m in self.modes):
            raise ValueError(f"modes must be non-negative integers; got {modes}")
        self.scale = _finite_positive("scale", scale)
        self.decay = _finite_positive("decay", decay, allow_zero=True)
        self.seed = int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        k, offsets = _half_lattice(max(self.modes), len(self.modes))
        inside = np.all(np.abs(k) <= np.array(self.modes), axis=1)
        k = torch.from_numpy(k[inside])
        xi2 = torch.randn(len(k), 2, generator=gen, dtype=torch.float64).square().sum(1)
        weight = self.scale**2 * xi2 * (1 + k.double().square().sum(1)) ** (-self.decay)
        shape = tuple(2 * m + 1 for m in self.modes)
        table = torch.zeros(shape, dtype=torch.float64)
        idx = tuple((k[:, i] + self.modes[i]) for i in range(len(self.modes)))
        table[idx] = weight
        neg = tuple((-k[:, i] + self.modes[i]) for i in range(len(self.modes)))
        table[neg] = weight
        self._table = table

    def spectrum(self, k: torch.Tensor, length: Sequence[float]) -> torch.Tensor:
        d = len(self.modes)
        if k.shape[-1] != d:
            raise ValueError(f"RandomSpectral was built for {d}-D modes; got {k.shape[-1]}-D wavevectors")
        inside = torch.ones(k.shape[:-1], dtype=torch.bool)
        for i, m in enumerate(self.modes):
            inside &= k[..., i].abs() <= m
        idx = tuple(torch.where(inside, k[..., i] + self.modes[i], 0).long() for i in range(d))
        return torch.where(inside, self._table[idx], torch.zeros((), dtype=torch.float64))

    def is_trace_class(self, ndim: int) -> bool:
        return True

    def trace(self, ndim: int | Grid = 2, length: float | Sequence[float] = 1.0) -> float:
        return float(self._table.sum())

    def to_dict(self) -> dict:
        return {"type": self.kind, "modes": list(self.modes), "scale": self.scale, "decay": self.decay, "seed": self.seed}


class SumCovariance(Covariance):
    """``Q_1 + Q_2 + ...``; trace class iff every term is."""

    kind = "sum"

    def __init__(self, *terms: Covariance):
        flat: list[Covariance] = []
        for t in terms:
            if not isinstance(t, Covariance):
                raise TypeError(f"SumCovariance terms must be Covariance objects; got {type(t).__name__}")
            flat.extend(t.terms if isinstance(t, SumCovariance) else [t])
        if not flat:
            raise ValueError("SumCovariance needs at least one term")
        self.terms = tuple(flat)

    def spectrum(self, k: torch.Tensor, length: Sequence[float]) -> torch.Tensor:
        return sum(t.spectrum(k, length) for t in self.terms)

    def is_trace_class(self, ndim: int) -> bool:
        return all(t.is_trace_class(ndim) for t in self.terms)

    def trace(self, ndim: int | Grid = 2, length: float | Sequence[float] = 1.0) -> float:
        return sum(t.trace(ndim, length) for t in self.terms)

    def to_dict(self) -> dict:
        return {"type": self.kind, "terms": [t.to_dict() for t in self.terms]}

    def __repr__(self) -> str:
        return " + ".join(repr(t) for t in self.terms)


class ScaledCovariance(Covariance):
    """``factor * Q`` for a positive factor."""

    kind = "scaled"

    def __init__(self, base: Covariance, factor: float):
        if not isinstance(base, Covariance):
            raise TypeError(f"ScaledCovariance needs a Covariance; got {type(base).__name__}")
        self.base = base
        self.factor = _finite_positive("factor", factor)

    def spectrum(self, k: torch.Tensor, length: Sequence[float]) -> torch.Tensor:
        return self.factor * self.base.spectrum(k, length)

    def is_trace_class(self, ndim: int) -> bool:
        return self.base.is_trace_class(ndim)

    def trace(self, ndim: int | Grid = 2, length: float | Sequence[float] = 1.0) -> float:
        return self.factor * self.base.trace(ndim, length)

    def to_dict(self) -> dict:
        return {"type": self.kind, "factor": self.factor, "base": self.base.to_dict()}

    def __repr__(self) -> str:
        return f"{self.factor:g} * {self.base!r}"


_FAMILIES = {
    "matern": Matern,
    "laplacian_power": LaplacianPower,
    "squared_exponential": SquaredExponential,
    "white": White,
    "random_spectral": RandomSpectral,
}


def covariance_from_dict(d: dict) -> Covariance:
    """Rebuild a covariance from :meth:`Covariance.to_dict` output (plain data, e.g. from TOML).

    Raises ``ValueError`` naming the offending key on an unknown type or bad parameters.
    """
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"covariance spec must be a table with a 'type' key; got {d!r}")
    kind = d["type"]
    params = {k: v for k, v in d.items() if k != "type"}
    if kind == "sum":
        return SumCovariance(*(covariance_from_dict(t) for t in params.get("terms", [])))
    if kind == "scaled":
        return ScaledCovariance(covariance_from_dict(params["base"]), params["factor"])
    if kind not in _FAMILIES:
        raise ValueError(f"unknown covariance type {kind!r}; expected one of {sorted(_FAMILIES) + ['sum', 'scaled']}")
    try:
        return _FAMILIES[kind](**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for covariance {kind!r}: {e}") from None
