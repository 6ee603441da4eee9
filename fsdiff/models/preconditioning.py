"""Output preconditioning: ``SpectralPreconditioner`` (per-mode Gaussian posterior plus a scaled
residual network) and the simpler ``QColouredOutput`` (colour the output with ``Q^{1/2}``).

``QColouredOutput``:

A network that predicts ``eta`` directly makes errors of similar size on every Fourier mode.
The reverse SDE multiplies them by ``g²/s(t)``, which is large near ``t = 0``, and on fine
modes the true ``eta`` is tiny (``lambda_k`` decays), so fine-mode errors dominate the samples.
:class:`QColouredOutput` lets the network predict the *whitened* noise ``eps`` (``eta = Q^{1/2} eps``)
and returns ``eta_hat = Q^{1/2} eps_hat``: its errors on mode ``k`` are damped by
``sqrt(lambda_k)``, so ``eta_hat`` lies in the range of ``Q^{1/2}`` like ``eta`` itself, and the
DSM loss in L² weights mode ``k`` by ``lambda_k``. Select it with ``model.output = "whitened"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..covariance import Covariance, covariance_from_dict
from ..grid import Grid

__all__ = ["QColouredOutput", "SpectralPreconditioner"]


class QColouredOutput(nn.Module):
    """``eta_hat(x_t, t) = Q^{1/2} net(x_t, t)``, same score-model protocol as ``net``.

    Parameters
    ----------
    net : nn.Module or dict
        The inner score network (or its spec, rebuilt with ``build_model``).
    covariance : Covariance or dict
        Q of the SDE the model is trained with.
    """

    def __init__(self, net: nn.Module | Mapping, covariance: Covariance | Mapping):
        super().__init__()
        if isinstance(net, Mapping):
            from . import build_model

            net = build_model(net)
        self.net = net
        self.covariance = covariance if isinstance(covariance, Covariance) else covariance_from_dict(dict(covariance))
        self._cache: dict = {}

    @property
    def spec(self) -> dict:
        return {"type": "q_coloured", "net": self.net.spec, "covariance": self.covariance.to_dict()}

    def _sqrt_multiplier(self, grid: Grid, like: torch.Tensor) -> torch.Tensor:
        key = (grid, like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = self.covariance.eigenvalues(grid).sqrt().to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def forward(self, x_t: torch.Tensor, t, grid: Grid, *args, **kwargs) -> torch.Tensor:
        eps_hat = self.net(x_t, t, grid, *args, **kwargs)
        return grid.irfft(grid.rfft(eps_hat) * self._sqrt_multiplier(grid, eps_hat))


class SpectralPreconditioner(nn.Module):
    """Function-space EDM preconditioning: a residual network on top of the per-mode Gaussian posterior.

    With the data's per-mode mean ``mu_k`` and variance ``c_k`` (a fitted
    :class:`~fsdiff.data.SpectralStatistics`), Q's eigenvalues ``lambda_k`` and the SDE's
    ``m = m(t)``, ``s = s(t)``, the exact posterior mean of the coloured noise for Gaussian data
    ``N(mu, diag c)`` is, mode by mode,

        eta_G,k = s lambda_k (x_t - m mu)_k / (m² c_k + s² lambda_k),

    and its posterior standard deviation is ``c_out,k = sqrt(lambda_k m² c_k / (m² c_k + s² lambda_k))``.
    The model is

        eta_hat = eta_G + a * irfft(c_out * rfft(F(c_in (x_t - m mu), x0_G, t))),

    the function-space form of EDM's ``c_skip / c_out / c_in``:

    * ``F`` (``net``) gets ``c_in (x_t - m mu)`` with the *scalar* ``c_in = (m² v_d + s² v_q)^(-1/2)``
      (``v`` the pointwise variances of data and noise on the statistics grid), so its input stays a
      trace-class function with unit pointwise variance at every t and every resolution (per-mode
      whitening would make white noise, whose pointwise variance grows with N), and, as the
      conditioning channels, the Gaussian (Wiener) denoised estimate ``x0_G`` standardised by the
      data's pointwise std.
    * ``a = sqrt(M / |D|)`` (M the kept modes of the statistics grid) makes the target of ``F``,
      ``(eta - eta_G) / (a c_out)``, a field of unit pointwise variance.
    * Where the data carry no power, ``c_out = 0`` and the model is exact, at any resolution.
    * With ``F = 0`` the model *is* :class:`fsdiff.GaussianScore` of ``N(mu, diag c)``.

    Parameters
    ----------
    net : nn.Module or its spec
        Keeps ``net(x (B, C, *grid), t (B,), grid, cond (B, C, *grid)) -> (B, C, *grid)``, so it must be
        built with ``cond_channels = in_channels``.
    sde : SDE or its ``to_dict()``
    statistics : SpectralStatistics or its spec (then fitted buffers come from ``load_state_dict``)
    """

    def __init__(self, net: nn.Module | Mapping, sde, statistics):
        super().__init__()
        from ..data.statistics import SpectralStatistics
        from ..sde import SDE, sde_from_dict

        if isinstance(net, Mapping):
            from . import build_model

            net = build_model(net)
        self.net = net
        self.sde = sde if isinstance(sde, SDE) else sde_from_dict(dict(sde))
        self.statistics = statistics if isinstance(statistics, SpectralStatistics) else SpectralStatistics.from_spec(dict(statistics))
        channels = self.statistics.channels
        if getattr(net, "cond_channels", channels) != channels or getattr(net, "in_channels", channels) != channels:
            raise ValueError(f"the residual network must take {channels} data and {channels} conditioning channels "
                             f"(the Wiener estimate); got in_channels={getattr(net, 'in_channels', None)}, "
                             f"cond_channels={getattr(net, 'cond_channels', None)}")
        self.in_channels = channels
        self._cache: dict = {}

    @property
    def spec(self) -> dict:
        return {"type": "spectral_precond", "net": self.net.spec, "sde": self.sde.to_dict(),
                "statistics": self.statistics.spec}

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ per-grid constants
    def _constants(self, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lambda, c, mu)`` on ``grid``: ``(*rfft_shape)``, ``(C, *rfft_shape)``, ``(C, *shape)`` float64."""
        key = ("grid", grid)
        if key not in self._cache:
            lam = self.sde.covariance.eigenvalues(grid)
            self._cache[key] = (lam, self.statistics.eigenvalues(grid), self.statistics.mean_on(grid))
        return self._cache[key]

    def _scalars(self) -> tuple[float, float, float]:
        """``(v_d, v_q, a)`` on the statistics grid (fixed numbers: the same at every evaluation grid)."""
        if "scalars" not in self._cache:
            g = self.statistics.grid
            v_d = float(self.statistics.pointwise_variance().mean())
            v_q = self.sde.covariance.pointwise_variance(g)
            M = float((g.rfft_weights * g.mode_mask).sum())
            self._cache["scalars"] = (v_d, v_q, math.sqrt(M / g.volume))
        return self._cache["scalars"]

    def _schedule(self, t: torch.Tensor, like: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        tt = t.detach().to("cpu", torch.float64)
        view = (-1,) + (1,) * ndim
        return self.sde.mean_scale(tt).reshape(view), self.sde.std(tt).reshape(view)

    def c_out_squared(self, t: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Posterior variance ``lambda m² c / (m² c + s² lambda)`` per mode: ``(B, C, *rfft_shape)`` float64."""
        lam, c, _ = self._constants(grid)
        m, s = self._schedule(t, lam, 1 + grid.ndim)
        mc = m**2 * c
        den = mc + s**2 * lam
        return torch.where(den > 0, lam * mc / den.clamp_min(1e-300), torch.zeros_like(den))

    def loss_weight(self, t: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``1 / E||eta - eta_G||²``: the DSM weight that gives every t unit expected loss for ``F = 0``. ``(B,)``."""
        per = self.c_out_squared(t, grid) * grid.rfft_weights
        total = per.flatten(1).sum(1)
        return 1.0 / total.clamp_min(1e-12)

    def _posterior(self, x_t: torch.Tensor, t: torch.Tensor, grid: Grid) -> dict[str, torch.Tensor]:
        """Everything the Gaussian part gives, on ``x_t``'s device, float64, schedule evaluated once.

        ``eta_g, x0_g (B, C, *shape)``; ``c_out (B, C, *rfft_shape)``; ``m, s (B, 1, ...)``; ``mu (C, *shape)``.
        """
        lam, c, mu = self._constants(grid)
        m, s = self._schedule(t, x_t, 1 + grid.ndim)
        dev = x_t.device
        lam, c, mu, m, s = lam.to(dev), c.to(dev), mu.to(dev), m.to(dev), s.to(dev)
        r_hat = grid.rfft(x_t.double() - m * mu)
        den = m**2 * c + s**2 * lam
        inv = torch.where(den > 0, 1.0 / den.clamp_min(1e-300), torch.zeros_like(den))
        return {"eta_g": grid.irfft(r_hat * (s * lam * inv)), "x0_g": mu + grid.irfft(r_hat * (m * c * inv)),
                "c_out": (lam * m**2 * c * inv).clamp_min(0).sqrt(), "m": m, "s": s, "mu": mu}

    def gaussian_parts(self, x_t: torch.Tensor, t: torch.Tensor, grid: Grid):
        """``(eta_G, x0_G, c_out)``: posterior mean of eta, Wiener denoised estimate, posterior std (rfft layout)."""
        p = self._posterior(x_t, t, grid)
        return p["eta_g"], p["x0_g"], p["c_out"]

    def gaussian_statistics(self, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu (C, *shape), c (C, *rfft_shape), lambda (*rfft_shape))`` float64 on ``grid``.

        The Gaussian part of the model (data mean, data eigenvalues, Q's eigenvalues), used by the
        ``"ode_gauss"`` sampler to integrate it exactly.
        """
        lam, c, mu = self._constants(grid)
        return mu, c, lam

    def _split(self, x_t: torch.Tensor, t, grid: Grid) -> tuple[dict, torch.Tensor]:
        from .._checks import batch_times

        grid.check(x_t, "x_t", min_leading=2)
        if x_t.ndim != grid.ndim + 2 or x_t.shape[1] != self.in_channels:
            raise ValueError(f"x_t has shape {tuple(x_t.shape)}; expected (batch, {self.in_channels}, *{grid.shape})")
        t = batch_times(t, x_t.shape[0], x_t.dtype, x_t.device)
        p = self._posterior(x_t, t, grid)
        v_d, v_q, a = self._scalars()
        m, s, mu = p["m"], p["s"], p["mu"]
        c_in = (m**2 * v_d + s**2 * v_q).rsqrt()
        x_in = (c_in * (x_t.double() - m * mu)).to(x_t.dtype)
        cond = ((p["x0_g"] - mu) / math.sqrt(max(v_d, 1e-12))).to(x_t.dtype)
        f = self.net(x_in, t, grid, cond)
        return p, grid.irfft(grid.rfft(f) * (a * p["c_out"]).to(f.dtype))

    def residual(self, x_t: torch.Tensor, t, grid: Grid) -> torch.Tensor:
        """The network's part ``eta_hat - eta_G`` ``(B, C, *grid.shape)`` (zero for an untrained model)."""
        return self._split(x_t, t, grid)[1].to(x_t.dtype)

    def forward(self, x_t: torch.Tensor, t, grid: Grid) -> torch.Tensor:
        """Predicted coloured noise ``(B, C, *grid.shape)`` for ``x_t (B, C, *grid.shape)``, ``t (B,)``."""
        p, resid = self._split(x_t, t, grid)
        return (p["eta_g"].to(x_t.dtype) + resid).to(x_t.dtype)
