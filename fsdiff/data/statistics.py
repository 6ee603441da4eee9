"""Per-mode statistics of a function data set: the Gaussian with the data's mean and spectrum.

The spectral preconditioner (:class:`fsdiff.models.SpectralPreconditioner`) needs, for every
Fourier mode ``k`` of any grid, the data's mean coefficient ``mu_k`` and its per-mode variance
as an operator eigenvalue ``c_k`` (the convention of :meth:`fsdiff.Covariance.eigenvalues`:
``E|x_hat_k - mu_hat_k|² = c_k / |D|`` with forward-normalised coefficients). They are
estimated once, on the finest training grid, and stored as buffers (so they travel in every
checkpoint's ``state_dict``).

Beyond the estimation grid's kept modes the variance is **extrapolated**, by one of:

* ``"zero"``: ``c_k = 0``. Right for band-limited data (MNIST as served by fsdiff has no
  power beyond ``|k_i| = 13``); the preconditioned model is then exact there.
* ``"exponential"``: a radial fit ``c(|k|) = exp(a - b |k|)`` (``|k|`` the Euclidean norm of
  the integer wavevector) by least squares on ``log c_k`` of the kept modes with
  ``K/2 <= |k| <= K`` (K the grid's highest mode), per channel, with ``b`` clamped to at least ``1e-3``.
  Smooth non-band-limited fields (log-normal, Darcy) have spectra that fall at least
  exponentially; a power-law fit overestimates them (measured: 9.6x the true power beyond the
  training grid, see ``docs/architecture.md``).

The mean is kept as a function on the estimation grid and is zero beyond it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..covariance import Covariance
from ..grid import Grid, resample

__all__ = ["SpectralStatistics", "EXTRAPOLATIONS"]

EXTRAPOLATIONS = ("zero", "exponential")


def _radius(grid: Grid) -> torch.Tensor:
    """Euclidean norm of the integer wavevector of every rfft entry, float64 ``rfft_shape``."""
    k2 = sum(k.to(torch.float64) ** 2 for k in grid.wavenumbers)
    return torch.broadcast_to(k2, grid.rfft_shape).sqrt()


class SpectralStatistics(nn.Module):
    """Mean function and per-mode variance of a data set, estimated on one grid.

    Parameters
    ----------
    shape, length : the estimation grid (points per axis, box length).
    channels : data channels C.
    extrapolation : ``"zero"`` or ``"exponential"`` (module docstring).

    Buffers
    -------
    mean : ``(C, *shape)`` float64, the data mean on the estimation grid.
    variance : ``(C, *rfft_shape)`` float64, ``c_k`` (operator eigenvalues; 0 on dropped modes).
    tail : ``(C, 2)`` float64, the fit ``(a, b)`` of ``"exponential"`` (zeros otherwise).
    count : ``()`` int64, the number of functions the estimate used (0: not estimated yet).
    """

    def __init__(self, shape: Sequence[int], length: float | Sequence[float] = 1.0, channels: int = 1,
                 extrapolation: str = "zero"):
        super().__init__()
        if extrapolation not in EXTRAPOLATIONS:
            raise ValueError(f"extrapolation must be one of {EXTRAPOLATIONS}; got {extrapolation!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer; got {channels!r}")
        self.grid = Grid(tuple(int(n) for n in shape), length)
        self.channels = channels
        self.extrapolation = extrapolation
        self.register_buffer("mean", torch.zeros(channels, *self.grid.shape, dtype=torch.float64))
        self.register_buffer("variance", torch.zeros(channels, *self.grid.rfft_shape, dtype=torch.float64))
        self.register_buffer("tail", torch.zeros(channels, 2, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self._cache: dict = {}

    # ------------------------------------------------------------------ plain data
    @property
    def spec(self) -> dict:
        return {"shape": list(self.grid.shape), "length": list(self.grid.length), "channels": self.channels,
                "extrapolation": self.extrapolation}

    @classmethod
    def from_spec(cls, spec: dict) -> "SpectralStatistics":
        allowed = {"shape", "length", "channels", "extrapolation"}
        bad = sorted(set(spec) - allowed)
        if bad or "shape" not in spec:
            raise ValueError(f"statistics spec needs 'shape' and only keys {sorted(allowed)}; got {sorted(spec)}")
        return cls(spec["shape"], spec.get("length", 1.0), spec.get("channels", 1), spec.get("extrapolation", "zero"))

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ estimation
    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> "SpectralStatistics":
        """Estimate from functions ``data (n, C, *shape)`` on the estimation grid (``n >= 2``)."""
        self.grid.check(data, "data", min_leading=2)
        if data.shape[1] != self.channels or data.shape[0] < 2:
            raise ValueError(f"data has shape {tuple(data.shape)}; expected (n >= 2, {self.channels}, *{self.grid.shape})")
        if not torch.isfinite(data).all():
            raise ValueError("data holds non-finite values; cannot estimate statistics")
        x = data.detach().to("cpu", torch.float64)
        xh = self.grid.rfft(x) * self.grid.mode_mask
        mu_h = xh.mean(0)
        var = (xh - mu_h).abs().pow(2).sum(0) / (x.shape[0] - 1)
        self.mean.copy_(self.grid.irfft(mu_h))
        self.variance.copy_(var * self.grid.volume * self.grid.mode_mask)
        self.tail.copy_(self._fit_tail() if self.extrapolation == "exponential" else torch.zeros_like(self.tail))
        self.count.fill_(x.shape[0])
        self._cache.clear()
        return self

    @torch.no_grad()
    def fit_dataset(self, dataset, n: int, generator: torch.Generator | None = None, batch: int = 2048) -> "SpectralStatistics":
        """Estimate from ``n`` functions drawn by ``dataset.sample(grid, ., generator)`` (in batches)."""
        if n < 2:
            raise ValueError(f"need at least 2 functions to estimate statistics; got n={n}")
        parts, left = [], int(n)
        while left > 0:
            parts.append(dataset.sample(self.grid, min(batch, left), generator).to(torch.float64))
            left -= parts[-1].shape[0]
        return self.fit(torch.cat(parts))

    def _fit_tail(self) -> torch.Tensor:
        r = _radius(self.grid)
        K = min(self.grid.max_modes)
        if K < 2:
            raise ValueError(f"the estimation grid {self.grid!r} is too coarse to fit a spectral tail")
        band = self.grid.mode_mask & (r >= K / 2) & (r <= K)
        out = torch.zeros(self.channels, 2, dtype=torch.float64)
        for c in range(self.channels):
            sel = band & (self.variance[c] > 0)
            if int(sel.sum()) < 2:
                continue  # no power in the outer band: leave the tail at zero (band-limited)
            X, Y = r[sel], self.variance[c][sel].log()
            b = -float(((X - X.mean()) * (Y - Y.mean())).sum() / ((X - X.mean()) ** 2).sum())
            b = max(b, 1e-3)
            out[c] = torch.tensor([float((Y + b * X).mean()), b], dtype=torch.float64)
        return out

    # ------------------------------------------------------------------ evaluation
    def _require_fitted(self) -> None:
        if int(self.count) < 2:
            raise RuntimeError("SpectralStatistics used before fit(): estimate them from the training data first")

    def eigenvalues(self, grid: Grid) -> torch.Tensor:
        """``c_k`` on ``grid``'s rfft layout, ``(C, *grid.rfft_shape)`` float64 (0 on dropped modes)."""
        self._require_fitted()
        key = ("eig", grid)
        if key not in self._cache:
            if grid.ndim != self.grid.ndim or not all(math.isclose(a, b) for a, b in zip(grid.length, self.grid.length)):
                raise ValueError(f"statistics live on {self.grid!r}; cannot evaluate them on {grid!r}")
            inside = torch.ones(grid.rfft_shape, dtype=torch.bool)
            src_idx = []
            for i, (k, K, n) in enumerate(zip(grid.wavenumbers, self.grid.max_modes, self.grid.shape)):
                kb = torch.broadcast_to(k, grid.rfft_shape)
                inside &= kb.abs() <= K
                src_idx.append(kb.clamp(-K, K) % n if i < grid.ndim - 1 else kb.clamp(0, K))
            table = self.variance[(slice(None), *src_idx)] * inside
            if self.extrapolation == "exponential":
                r = _radius(grid)
                a, b = self.tail[:, 0].reshape(-1, *[1] * grid.ndim), self.tail[:, 1].reshape(-1, *[1] * grid.ndim)
                fitted = torch.where(a != 0, torch.exp(a - b * r), torch.zeros_like(r))
                table = torch.where(inside, table, fitted)
            self._cache[key] = (table * grid.mode_mask).contiguous()
        return self._cache[key]

    def mean_on(self, grid: Grid) -> torch.Tensor:
        """The mean on ``grid``, ``(C, *grid.shape)`` float64 (Fourier-resampled, zero beyond the estimation grid)."""
        self._require_fitted()
        key = ("mean", grid)
        if key not in self._cache:
            self._cache[key] = resample(self.mean, self.grid, grid).contiguous()
        return self._cache[key]

    def pointwise_variance(self) -> torch.Tensor:
        """``E (x - mu)(x)²`` on the estimation grid per channel, ``(C,)`` float64."""
        self._require_fitted()
        return (self.variance * self.grid.rfft_weights).flatten(1).sum(1) / self.grid.volume

    def snr_profile(self, covariance: Covariance, channel: int = 0) -> list[tuple[int, float]]:
        """``[(r, mean of c_k / lambda_k over modes with round(|k|) = r), ...]`` on the estimation grid.

        The data-to-noise ratio per wavenumber shell. The reverse process decides mode k near the time
        where ``m² c_k = s² lambda_k``, so a profile that *falls* with ``r`` draws large scales first
        (as white noise does in pixel space); a flat or rising one draws fine scales first. Shells
        without data power are left out.
        """
        self._require_fitted()
        c = self.variance[channel]
        lam = covariance.eigenvalues(self.grid)
        shell = _radius(self.grid).round().long()
        keep = (c > 0) & (lam > 0)
        out = []
        for r in range(int(shell.max()) + 1):
            sel = keep & (shell == r)
            if bool(sel.any()):
                out.append((r, float((c[sel] / lam[sel]).mean())))
        return out

    def as_covariance(self, channel: int = 0) -> "TabulatedCovariance":
        """The estimated spectrum of one channel as a :class:`~fsdiff.Covariance` (e.g. for :class:`fsdiff.GaussianScore`)."""
        self._require_fitted()
        return TabulatedCovariance(self, channel)


class TabulatedCovariance(Covariance):
    """A covariance whose eigenvalues are a :class:`SpectralStatistics` table (and its extrapolation).

    Only :meth:`eigenvalues` on grids of the statistics' domain is supported; it is not plain data
    (``to_dict`` raises), so it is meant for oracles and tests, not for configs.
    """

    kind = "tabulated"

    def __init__(self, statistics: SpectralStatistics, channel: int = 0):
        self.statistics = statistics
        self.channel = int(channel)

    def eigenvalues(self, grid: Grid, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return self.statistics.eigenvalues(grid)[self.channel].to(dtype)

    def spectrum(self, k: torch.Tensor, length: Sequence[float]) -> torch.Tensor:
        raise NotImplementedError("TabulatedCovariance is only defined on grids: use eigenvalues(grid)")

    def is_trace_class(self, ndim: int) -> bool:
        return self.statistics.extrapolation == "zero" or bool((self.statistics.tail[:, 1] > 0).all())

    def to_dict(self) -> dict:
        raise TypeError("TabulatedCovariance holds estimated tensors; it has no plain-data spec")

    def __repr__(self) -> str:
        return f"TabulatedCovariance(grid={self.statistics.grid!r}, extrapolation={self.statistics.extrapolation!r})"
