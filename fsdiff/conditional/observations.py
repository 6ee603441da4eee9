"""What is observed about one function: its low Fourier modes, its values at points, or its values under a mask.

Each observation is a plain object that checks itself against the target grid and the batch, and
gives the sampler of :mod:`fsdiff.conditional.sampler` what it needs:

* :class:`LowModes` is *exact*: the observed modes are replaced, at every reverse step, by their
  forward-noised values (RePaint in Fourier space, where the forward process of each mode is known);
* :class:`PointObservations` and :class:`Mask` are *guided*: the linear observation
  ``y = A u + noise`` enters through the likelihood of the denoised estimate (see the sampler).

Point evaluation is the band-limited (trigonometric) interpolant of the grid function,

    u(p) = sum_k w_k Re(u_hat_k exp(2 pi i k . p / L)),    k over the kept rfft modes,

with ``w_k`` the Parseval multiplicities (:attr:`fsdiff.Grid.rfft_weights`), so it means the same
function at every target resolution; on a grid point it returns the grid value of a band-limited
function exactly.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_finite
from ..grid import Grid

__all__ = ["LowModes", "PointObservations", "Mask", "evaluation_matrices", "evaluate_at_points"]


def _finite_positive_or_zero(name: str, v: float) -> float:
    v = float(v)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {v}")
    return v


def evaluation_matrices(points: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(E_cos, E_sin, w)``: ``u(p) = E_cos @ (w Re u_hat) - E_sin @ (w Im u_hat)`` over the kept rfft modes.

    ``points (P, d)`` in domain coordinates; returns ``E_cos, E_sin (P, M)`` float64 and ``w (M,)``
    (multiplicity times kept-mode mask), ``M = prod(grid.rfft_shape)``.
    """
    theta = torch.zeros(points.shape[0], *grid.rfft_shape, dtype=torch.float64)
    for i, (k, L) in enumerate(zip(grid.wavenumbers, grid.length)):
        theta = theta + (2 * math.pi / L) * points[:, i].double().reshape(-1, *[1] * grid.ndim) * k.double()
    theta = theta.reshape(points.shape[0], -1)
    w = (grid.rfft_weights * grid.mode_mask).reshape(-1)
    return theta.cos(), theta.sin(), w


def evaluate_at_points(u: torch.Tensor, grid: Grid, mats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Band-limited values of ``u (B, C, *grid.shape)`` at the points of ``mats``: ``(B, C, P)`` (differentiable)."""
    e_cos, e_sin, w = mats
    u_hat = grid.rfft(u.double()).reshape(*u.shape[:2], -1) * w.to(u.device)
    return u_hat.real @ e_cos.T.to(u.device) - u_hat.imag @ e_sin.T.to(u.device)


class LowModes:
    """Exact conditioning on the Fourier modes a coarse grid holds (super-resolution).

    Parameters
    ----------
    u_coarse : ``(C, *coarse.shape)`` or ``(*coarse.shape)``: the observed function on ``grid_coarse``.
        Its kept modes (``|k_i| <= (N_i - 1) // 2``; an even grid's Nyquist mode is not a
        function's mode and is dropped) are the observation.
    grid_coarse : the coarse Grid (same domain as the target grid, not finer on any axis).

    Notes
    -----
    The sampler replaces these modes of the state by ``m(t) u_hat_k + s(t) eta_k`` (``eta ~ N(0, Q)``
    drawn fresh, nested) after every reverse step, and by ``u_hat_k`` exactly at the end, so a sample
    restricted to the coarse grid equals the observation's band-limited part.
    """

    kind = "exact"

    def __init__(self, u_coarse: torch.Tensor, grid_coarse: Grid):
        if not isinstance(grid_coarse, Grid):
            raise TypeError(f"grid_coarse must be an fsdiff Grid; got {type(grid_coarse).__name__}")
        u = torch.as_tensor(u_coarse)
        if u.ndim == grid_coarse.ndim:
            u = u[None]
        grid_coarse.check(u, "u_coarse", min_leading=1)
        if u.ndim != grid_coarse.ndim + 1:
            raise ValueError(f"u_coarse must be (C, *{grid_coarse.shape}) or {grid_coarse.shape}; got {tuple(u.shape)}")
        check_finite(u, "u_coarse")
        self.u, self.grid = u.double(), grid_coarse

    @property
    def channels(self) -> int:
        return self.u.shape[0]

    def check(self, grid: Grid, channels: int) -> None:
        """Raise unless the observation fits the target ``grid`` and ``channels``."""
        if grid.ndim != self.grid.ndim or any(abs(a - b) > 1e-12 * max(a, b) for a, b in zip(grid.length, self.grid.length)):
            raise ValueError(f"the coarse grid {self.grid!r} and the target grid {grid!r} describe different domains")
        if any(c > f for c, f in zip(self.grid.shape, grid.shape)):
            raise ValueError(f"the observation grid {self.grid.shape} is finer than the target grid {grid.shape} on some "
                             "axis: super-resolution needs a target at least as fine as the observation")
        if channels != self.channels:
            raise ValueError(f"the observation has {self.channels} channel(s); the model samples {channels}")

    def mask(self, grid: Grid) -> torch.Tensor:
        """Boolean ``rfft_shape`` mask of the observed modes on the target ``grid``."""
        m = grid.mode_mask.clone()
        for k, K in zip(grid.wavenumbers, self.grid.max_modes):
            m = m & (k.abs() <= K)
        return m

    def coefficients(self, grid: Grid) -> torch.Tensor:
        """The observation's rfft coefficients on the target grid (zero off the observed modes): ``(C, *rfft_shape)``."""
        from ..grid import resample

        return grid.rfft(resample(self.u, self.grid, grid)) * self.mask(grid)


class PointObservations:
    """Noisy values of the function at scattered points: ``y_j = u(p_j) + noise``, noise ``N(0, noise_std²)``.

    Parameters
    ----------
    x_points : ``(P, d)`` coordinates inside the domain ``[0, L_1) x ... x [0, L_d)``.
    values : ``(P,)`` or ``(P, C)`` observed values.
    noise_std : observation noise standard deviation (``>= 0``; 0 is allowed but makes the guidance
        stiff at small t; the sampler adds the posterior variance of the denoised estimate).
    """

    kind = "guided"

    def __init__(self, x_points: torch.Tensor, values: torch.Tensor, noise_std: float = 0.05):
        p = torch.as_tensor(x_points, dtype=torch.float64)
        if p.ndim != 2 or p.shape[0] < 1:
            raise ValueError(f"x_points must be (P, d) with P >= 1; got shape {tuple(p.shape)}")
        v = torch.as_tensor(values, dtype=torch.float64)
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2 or v.shape[0] != p.shape[0]:
            raise ValueError(f"values must be (P,) or (P, C) with P = {p.shape[0]}; got shape {tuple(v.shape)}")
        check_finite(p, "x_points")
        check_finite(v, "values")
        self.points, self.values = p, v.T.contiguous()  # (C, P)
        self.noise_std = _finite_positive_or_zero("noise_std", noise_std)

    @property
    def channels(self) -> int:
        return self.values.shape[0]

    def check(self, grid: Grid, channels: int) -> None:
        if self.points.shape[1] != grid.ndim:
            raise ValueError(f"points are {self.points.shape[1]}-D but the target grid {grid!r} is {grid.ndim}-D")
        L = torch.tensor(grid.length, dtype=torch.float64)
        outside = ((self.points < 0) | (self.points >= L)).any(1)
        if outside.any():
            j = int(outside.nonzero()[0])
            raise ValueError(f"{int(outside.sum())} point(s) lie outside the domain [0, L) with L = {grid.length}, "
                             f"e.g. point {j} at {self.points[j].tolist()}")
        if channels != self.channels:
            raise ValueError(f"the observation has {self.channels} channel(s); the model samples {channels}")


class Mask(PointObservations):
    """Observed pixels of an image: ``mask`` (True where observed) and ``values`` on the mask's own grid.

    Parameters
    ----------
    mask : ``(*shape)`` bool on ``grid`` (default: the target grid's domain at the mask's shape).
    values : ``(*shape)`` or ``(C, *shape)``; only the masked entries are used.
    noise_std : observation noise standard deviation.
    grid : the Grid of the mask; its points are where the values were observed.

    Notes
    -----
    It is a :class:`PointObservations` at the masked grid points, so it works at any target grid
    (the target's band-limited function is evaluated at the observation points).
    """

    def __init__(self, mask: torch.Tensor, values: torch.Tensor, noise_std: float = 0.05, grid: Grid | None = None):
        m = torch.as_tensor(mask)
        if m.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = observed); got {m.dtype}")
        v = torch.as_tensor(values, dtype=torch.float64)
        if v.ndim == m.ndim:
            v = v[None]
        if tuple(v.shape[1:]) != tuple(m.shape) or v.ndim != m.ndim + 1:
            raise ValueError(f"values must have the mask's shape {tuple(m.shape)} (or (C, *that)); got {tuple(v.shape)}")
        if not m.any():
            raise ValueError("the mask observes nothing (no True entry)")
        self._mask, self._grid, self._vals = m, grid, v
        if grid is not None:
            if tuple(grid.shape) != tuple(m.shape):
                raise ValueError(f"the mask has shape {tuple(m.shape)} but its grid is {grid.shape}")
            self._set_points(grid)
        self.noise_std = _finite_positive_or_zero("noise_std", noise_std)

    def _set_points(self, grid: Grid) -> None:
        mesh = grid.mesh()  # (d, *shape)
        pts = mesh[:, self._mask].T.contiguous()
        vals = self._vals[:, self._mask]
        check_finite(vals, "values")
        self.points, self.values = pts, vals

    def check(self, grid: Grid, channels: int) -> None:
        if self._mask.ndim != grid.ndim:
            raise ValueError(f"the mask is {self._mask.ndim}-D but the target grid {grid!r} is {grid.ndim}-D")
        if self._grid is None:
            self._grid = Grid(tuple(self._mask.shape), grid.length)
            self._set_points(self._grid)
        super().check(grid, channels)
