"""Linear SDEs in Hilbert space driven by Q-Wiener noise, with closed-form marginals.

Every SDE here has the form

    dX_t = a(t) X_t dt + g(t) dW^Q_t,      X_0 ~ data,

with ``W^Q`` a Q-Wiener process (Q a trace-class :class:`~fsdiff.covariance.Covariance`).
The marginal given ``X_0`` is Gaussian, ``X_t = m(t) X_0 + s(t) eta`` with ``eta ~ N(0, Q)``:
``mean_scale(t) = m(t)``, ``std(t) = s(t)``. The score network learns the *preconditioned*
score ``Q grad log p_t`` (which exists in function space); for the conditional law it is
``-eta / s(t)``.

Reverse-time SDE and probability-flow ODE, written as drifts in the forward time variable
(integrate them from ``t = T`` down to ``t = eps`` with negative steps):

    reverse:  dX = [a X - g² Q grad log p_t(X)] dt + g dW^Q
    ODE:      dX = [a X - ½ g² Q grad log p_t(X)] dt

``VPSDE``: ``a = -½ beta(t)``, ``g² = beta(t)``, ``m = exp(-½ int_0^t beta)``, ``s² = 1 - m²``.
``VESDE``: ``a = 0``, ``g² = d sigma(t)² / dt`` with ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``,
``m = 1`` and ``s² = sigma(t)² - sigma_min²`` (exactly the SDE's marginal, so ``s(0) = 0``).
"""

from __future__ import annotations

import math

import torch

from ._checks import as_time, check_finite, check_times, per_sample
from .covariance import Covariance, covariance_from_dict
from .grid import Grid

__all__ = ["SDE", "VPSDE", "VESDE", "sde_from_dict"]


class SDE:
    """Base class: a linear SDE ``dX = a(t) X dt + g(t) dW^Q`` on ``t in [0, T]``.

    Subclasses define :meth:`drift_coeff` (a), :meth:`diffusion_sq` (g²), :meth:`mean_scale`
    and :meth:`std`. Times are floats or tensors of shape ``(B,)``; results are float64 tensors.

    ``covariance=None`` gives the noise schedule alone, for points in R^d with ``Q = I``
    (:mod:`fsdiff.points`, :mod:`fsdiff.sno`): its scalar coefficients work as usual, and every
    method that draws function-space noise on a grid refuses it with a clear error.
    """

    T: float = 1.0

    def __init__(self, covariance: Covariance | None, allow_non_trace_class: bool = False):
        if covariance is not None and not isinstance(covariance, Covariance):
            raise TypeError(f"covariance must be a fsdiff Covariance (or None for points in R^d); "
                            f"got {type(covariance).__name__}")
        self.covariance = covariance
        self.allow_non_trace_class = bool(allow_non_trace_class)

    def check_noise(self, ndim: int) -> None:
        """Raise unless Q is trace class in ``ndim`` dimensions, or the SDE was built with
        ``allow_non_trace_class=True`` (an explicit opt-in for white-noise *baselines*, whose
        noise is a grid-dependent object, not a function: results then depend on the grid)."""
        if self.covariance is None:
            raise ValueError("this SDE has no covariance: it is a noise schedule for points in R^d (Q = I); "
                             "build it with a Covariance (e.g. fsdiff.Matern(...)) to diffuse functions on a grid")
        if not self.allow_non_trace_class:
            self.covariance.require_trace_class(ndim)

    def _covariance_dict(self) -> dict | None:
        return None if self.covariance is None else self.covariance.to_dict()

    def _extra_dict(self) -> dict:
        return {"allow_non_trace_class": True} if self.allow_non_trace_class else {}

    # -- schedule (per subclass) ---------------------------------------------
    def drift_coeff(self, t) -> torch.Tensor:
        raise NotImplementedError

    def diffusion_sq(self, t) -> torch.Tensor:
        raise NotImplementedError

    def mean_scale(self, t) -> torch.Tensor:
        """``m(t)`` with ``E[X_t | X_0] = m(t) X_0``."""
        raise NotImplementedError

    def std(self, t) -> torch.Tensor:
        """``s(t)`` with ``Cov[X_t | X_0] = s(t)² Q``."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------
    def diffusion(self, t) -> torch.Tensor:
        """``g(t)``, the scalar multiplying ``dW^Q``."""
        return self.diffusion_sq(t).sqrt()

    def _check(self, x: torch.Tensor, grid: Grid) -> None:
        grid.check(x, "x", min_leading=2)
        self.check_noise(grid.ndim)

    def perturb(
        self, x0: torch.Tensor, t, grid: Grid, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``X_t | X_0``: returns ``(x_t, eta)``, ``x_t = m(t) x0 + s(t) eta``, ``eta ~ N(0, Q)``.

        ``x0``: ``(B, C, *grid.shape)``; ``t``: float or ``(B,)``. Noise is nested across grids.
        """
        self._check(x0, grid)
        check_finite(x0, "x0")
        t = check_times(as_time(t, x0), self.T)  # before drawing: a refused call consumes no randomness
        eta = self.covariance.sample(grid, x0.shape[0], x0.shape[1], generator=generator, dtype=x0.dtype, device=x0.device)
        return self._marginal(x0, t, eta), eta

    def marginal(self, x0: torch.Tensor, t, eta: torch.Tensor) -> torch.Tensor:
        """``m(t) x0 + s(t) eta`` for given noise ``eta`` (same shape as ``x0``); ``t`` in ``[0, T]``."""
        return self._marginal(x0, check_times(as_time(t, x0), self.T), eta)

    def _marginal(self, x0: torch.Tensor, t: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        return per_sample(self.mean_scale(t), x0) * x0 + per_sample(self.std(t), x0) * eta

    def prior_sample(
        self, grid: Grid, n: int, channels: int = 1, generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw from the reference law at ``t = T``, ``N(0, s(T)² Q)``: ``(n, channels, *grid.shape)``."""
        self.check_noise(grid.ndim)
        eta = self.covariance.sample(grid, n, channels, generator=generator, dtype=dtype, device=device)
        return float(self.std(self.T)) * eta

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """Forward drift ``a(t) x``."""
        return per_sample(self.drift_coeff(as_time(t, x)), x) * x

    def reverse_drift(self, x: torch.Tensor, t, qscore: torch.Tensor) -> torch.Tensor:
        """Reverse-SDE drift in forward time, ``a x - g² Q grad log p_t``, given ``qscore = Q grad log p_t(x)``."""
        t = as_time(t, x)
        return self.drift(x, t) - per_sample(self.diffusion_sq(t), x) * qscore

    def ode_drift(self, x: torch.Tensor, t, qscore: torch.Tensor) -> torch.Tensor:
        """Probability-flow ODE drift ``a x - ½ g² Q grad log p_t``."""
        t = as_time(t, x)
        return self.drift(x, t) - 0.5 * per_sample(self.diffusion_sq(t), x) * qscore

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k not in ("type", "covariance"))
        return f"{type(self).__name__}({self.covariance!r}, {args})"


class VPSDE(SDE):
    """Variance-preserving SDE ``dX = -½ beta(t) X dt + sqrt(beta(t)) dW^Q``.

    Parameters
    ----------
    covariance : Covariance
        Q, trace class on the grids it will be used with.
    allow_non_trace_class : bool
        Opt in to a Q that is not trace class (e.g. ``White()`` in 2-D) for baseline
        comparisons; off by default, when :meth:`perturb`, :meth:`prior_sample` and the
        samplers refuse such Q. Stored in :meth:`to_dict` only when True.
    beta_min, beta_max : float
        Linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)`` (the multilevel paper's).
    schedule : {"linear", "cosine"}
        ``"cosine"``: ``m(t) = cos(phi(t)) / cos(phi_0)`` with ``phi`` linear from
        ``phi_0 = pi/2 * s/(1+s)`` (s = 0.008, Nichol & Dhariwal) to the angle at which
        ``m(T)`` equals the linear schedule's ``m(T)`` (so both end equally close to the prior
        and ``beta`` stays finite). ``beta_min`` is then unused.
    """

    def __init__(self, covariance: Covariance | None, beta_min: float = 0.1, beta_max: float = 20.0, schedule: str = "linear",
                 allow_non_trace_class: bool = False):
        super().__init__(covariance, allow_non_trace_class)
        if not (math.isfinite(beta_min) and math.isfinite(beta_max) and 0 <= beta_min < beta_max):
            raise ValueError(f"need 0 <= beta_min < beta_max, finite; got beta_min={beta_min}, beta_max={beta_max}")
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine'; got {schedule!r}")
        self.beta_min, self.beta_max, self.schedule = float(beta_min), float(beta_max), schedule
        if schedule == "cosine":
            s = 0.008
            self._phi0 = 0.5 * math.pi * s / (1 + s)
            m_end = math.exp(-0.5 * (beta_min + 0.5 * (beta_max - beta_min)))
            self._phi1 = math.acos(m_end * math.cos(self._phi0))

    def integrated_beta(self, t) -> torch.Tensor:
        """``int_0^t beta(r) dr``."""
        t = as_time(t).double()
        if self.schedule == "linear":
            return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return -2 * torch.log(self.mean_scale(t))

    def beta(self, t) -> torch.Tensor:
        t = as_time(t).double()
        if self.schedule == "linear":
            return self.beta_min + (self.beta_max - self.beta_min) * t
        phi = self._phi0 + t * (self._phi1 - self._phi0)
        return 2 * torch.tan(phi) * (self._phi1 - self._phi0)

    def drift_coeff(self, t) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t) -> torch.Tensor:
        return self.beta(t)

    def mean_scale(self, t) -> torch.Tensor:
        t = as_time(t).double()
        if self.schedule == "linear":
            return torch.exp(-0.5 * self.integrated_beta(t))
        phi = self._phi0 + t * (self._phi1 - self._phi0)
        return torch.cos(phi) / math.cos(self._phi0)

    def std(self, t) -> torch.Tensor:
        t = as_time(t).double()
        if self.schedule == "linear":
            return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))
        return torch.sqrt((1 - self.mean_scale(t) ** 2).clamp_min(0))

    def to_dict(self) -> dict:
        return {"type": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max,
                "schedule": self.schedule, "covariance": self._covariance_dict(), **self._extra_dict()}


class VESDE(SDE):
    """Variance-exploding SDE ``dX = sqrt(d sigma²/dt) dW^Q``, ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``."""

    def __init__(self, covariance: Covariance | None, sigma_min: float = 0.01, sigma_max: float = 10.0,
                 allow_non_trace_class: bool = False):
        super().__init__(covariance, allow_non_trace_class)
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, finite; got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(sigma_max / sigma_min)

    def sigma(self, t) -> torch.Tensor:
        t = as_time(t).double()
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def drift_coeff(self, t) -> torch.Tensor:
        return torch.zeros_like(as_time(t).double())

    def diffusion_sq(self, t) -> torch.Tensor:
        return 2 * self._log_ratio * self.sigma(t) ** 2

    def mean_scale(self, t) -> torch.Tensor:
        return torch.ones_like(as_time(t).double())

    def std(self, t) -> torch.Tensor:
        return torch.sqrt(self.sigma(t) ** 2 - self.sigma_min**2)

    def to_dict(self) -> dict:
        return {"type": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "covariance": self._covariance_dict(), **self._extra_dict()}


def sde_from_dict(d: dict) -> SDE:
    """Rebuild an SDE from :meth:`SDE.to_dict` output."""
    if not isinstance(d, dict) or d.get("type") not in ("vp", "ve"):
        raise ValueError(f"sde spec needs type 'vp' or 've'; got {d!r}")
    params = {k: v for k, v in d.items() if k not in ("type", "covariance")}
    if "covariance" not in d:
        raise ValueError("sde spec is missing its 'covariance' table")
    cls = VPSDE if d["type"] == "vp" else VESDE
    try:
        cov = None if d["covariance"] is None else covariance_from_dict(d["covariance"])
        return cls(cov, **params)
    except TypeError as e:
        raise ValueError(f"bad parameters for sde {d['type']!r}: {e}") from None
