"""Encodings of a probability distribution: kernel mean embeddings as functions on a grid, and prototypes.

The kernel mean embedding of ``nu`` with the normalised Gaussian kernel
``k(y, r) = N(r; y, h² I)`` is ``mu_nu(r) = E_{y~nu} k(y, r)``: the density of ``nu`` mollified
at width ``h``, a smooth function that a neural operator can read at any resolution. Here it is
evaluated at the points of a :class:`~fsdiff.grid.Grid` shifted to a box
``origin + [0, L)^d`` over the data domain (the box should leave a margin of several
``h + spread`` so the function is ~0 at the periodic boundary).

* empirical: ``(1/n) sum_i k(y_i, r)`` from ``n`` samples (unbiased for ``mu_nu``; pointwise
  variance ``O(1/n)``);
* exact: closed form for Gaussian mixtures, ``sum_k w_k N(r; mu_k, Sigma_k + h² I)``.

:func:`prototype_encoding` is the alternative vector encoding (mean of samples or of latent codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..grid import Grid

__all__ = ["KernelMeanEmbedding", "prototype_encoding"]


@dataclass(frozen=True)
class KernelMeanEmbedding:
    """Gaussian-kernel mean embeddings on ``grid`` placed at ``origin + grid.mesh()``.

    Parameters
    ----------
    grid : Grid, ``d``-dimensional (the data dimension).
    origin : lower corner of the box, one float per axis.
    bandwidth : kernel width ``h`` (standard deviation of the Gaussian kernel).
    chunk : samples per block in the empirical sum (memory ``B x chunk x grid.size``).
    """

    grid: Grid
    origin: tuple[float, ...]
    bandwidth: float
    chunk: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise TypeError(f"grid must be an fsdiff Grid; got {type(self.grid).__name__}")
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != self.grid.ndim:
            raise ValueError(f"origin needs {self.grid.ndim} entries for grid {self.grid!r}; got {self.origin}")
        object.__setattr__(self, "origin", origin)
        if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise ValueError(f"bandwidth must be positive and finite; got {self.bandwidth}")

    @property
    def dim(self) -> int:
        return self.grid.ndim

    def with_grid(self, grid: Grid | int | Sequence[int]) -> "KernelMeanEmbedding":
        """The same embedding (same box, same kernel) at another resolution."""
        if not isinstance(grid, Grid):
            grid = self.grid.with_shape(grid)
        if grid.length != self.grid.length:
            raise ValueError(f"box length differs: {grid.length} vs {self.grid.length}")
        return KernelMeanEmbedding(grid, self.origin, self.bandwidth, self.chunk)

    def points(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Physical coordinates of the grid points, ``(grid.size, d)`` (row-major over the grid)."""
        mesh = self.grid.mesh(torch.float64).reshape(self.dim, -1).T
        return (mesh + torch.tensor(self.origin, dtype=torch.float64)).to(dtype)

    def empirical(self, samples: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(1/n) sum_i N(r; y_i, h² I)`` on the grid.

        ``samples (n, d) -> (1, 1, *grid.shape)``; ``(B, n, d) -> (B, 1, *grid.shape)`` (as :meth:`exact_gmm`).
        """
        y = samples if samples.ndim == 3 else samples[None]
        if y.ndim != 3 or y.shape[-1] != self.dim or y.shape[1] < 1:
            raise ValueError(f"samples must be (n, {self.dim}) or (B, n, {self.dim}) with n >= 1; got {tuple(samples.shape)}")
        y = y.to(torch.float64)
        r = self.points()  # (M, d)
        h2 = self.bandwidth**2
        norm = (2 * math.pi * h2) ** (-self.dim / 2)
        acc = torch.zeros(y.shape[0], r.shape[0], dtype=torch.float64)
        for s in range(0, y.shape[1], self.chunk):
            d2 = torch.cdist(y[:, s: s + self.chunk], r[None].expand(y.shape[0], -1, -1)).square()  # (B, c, M)
            acc += torch.exp(-0.5 * d2 / h2).sum(1)
        return (norm * acc / y.shape[1]).reshape(y.shape[0], 1, *self.grid.shape).to(dtype)

    def exact_gmm(self, mixture, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Closed form for a :class:`~fsdiff.sno.gmm.GaussianMixture` (or batch): ``(1 or B, 1, *grid.shape)``."""
        if mixture.dim != self.dim:
            raise ValueError(f"mixture lives in R^{mixture.dim} but the embedding grid is {self.dim}-D")
        vals = mixture.kernel_mean_embedding(self.points(), self.bandwidth)
        if vals.ndim == 1:
            vals = vals[None]
        return vals.reshape(vals.shape[0], 1, *self.grid.shape).to(dtype)

    def to_dict(self) -> dict:
        return {"grid": self.grid.to_dict(), "origin": list(self.origin), "bandwidth": self.bandwidth}

    @classmethod
    def from_dict(cls, d: dict) -> "KernelMeanEmbedding":
        return cls(Grid.from_dict(d["grid"]), tuple(d["origin"]), float(d["bandwidth"]))


def prototype_encoding(samples: torch.Tensor, encoder=None) -> torch.Tensor:
    """Mean of the samples (or of ``encoder(samples)``, e.g. latent codes): ``(n, p) -> (p,)``, ``(B, n, p) -> (B, p)``."""
    if samples.ndim not in (2, 3) or samples.shape[-2] < 1:
        raise ValueError(f"samples must be (n, p) or (B, n, p) with n >= 1; got {tuple(samples.shape)}")
    z = samples if encoder is None else encoder(samples)
    return z.mean(dim=-2)
