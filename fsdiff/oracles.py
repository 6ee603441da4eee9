"""Exact score oracles for Gaussian data and function-space Gaussian mixtures.

They keep the score-model protocol ``model(x_t (B, C, *grid.shape), t (B,), grid) -> eta_hat``
and so stand in for a trained network in tests of samplers, losses and metrics.

Everything is diagonal in Fourier. With data covariance ``C`` (eigenvalues ``c_k``) and noise
covariance ``Q`` (eigenvalues ``q_k``), the forward SDE gives ``X_t = m X_0 + s eta`` and, for
Gaussian data ``N(mu, C)``,

    X_t ~ N(m mu, Sigma_t),   Sigma_t = m² C + s² Q,   eigenvalues  v_k(t) = m² c_k + s² q_k,

so ``Q grad log p_t(x) = -Q Sigma_t^+ (x - m mu)`` exactly, mode by mode. ``Sigma_t^+`` is the
pseudo-inverse: a mode with ``v_k(t) = 0`` (both ``c_k`` and ``q_k`` vanish, e.g. the zero
mode of two :class:`~fsdiff.covariance.LaplacianPower` covariances, or a mode outside a
finite-rank ``RandomSpectral`` Q) carries no randomness; its preconditioned score is set to 0.
A mode with ``q_k = 0 < c_k`` also gets zero preconditioned score (``Q`` kills it).

Modes are those the evaluation grid keeps (Nyquist dropped, see :mod:`fsdiff.grid`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .covariance import Covariance
from .grid import Grid, resample
from .parametrization import eta_to_x0, qscore_to_eta
from ._checks import as_time, batch_times
from .sde import SDE

__all__ = ["GaussianScore", "GaussianMixtureScore"]

MeanSpec = torch.Tensor | Callable[[Grid], torch.Tensor] | None


def _spectral_view(coef: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``(B,) + rfft_shape`` multiplier -> ``(B, 1, *rfft_shape)`` to broadcast over channels."""
    return coef.reshape(coef.shape[0], 1, *grid.rfft_shape)


def _pinv(v: torch.Tensor) -> torch.Tensor:
    """Elementwise pseudo-inverse ``1/v`` where ``v > 0``, else 0 (float64)."""
    return torch.where(v > 0, 1.0 / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))


def _score_multiplier(oracle, tt: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``-q_k / v_k(t)`` as ``(B, 1, *rfft_shape)`` (or ``(1, 1, ...)`` when all times agree), float64."""
    if bool((tt == tt[0]).all()):
        tt = tt[:1]
    mult = -oracle.sde.covariance.eigenvalues(grid) * _pinv(GaussianScore.marginal_eigenvalues(oracle, tt, grid))
    return _spectral_view(mult, grid)


class GaussianScore:
    """Exact score of Gaussian data ``N(mean, cov)`` under ``sde``.

    Parameters
    ----------
    sde : SDE
        The forward SDE (its covariance is Q).
    cov : Covariance
        Data covariance C (any spectral covariance).
    mean : tensor, callable or None
        Data mean function. ``None``: zero. A callable ``mean(grid) -> (C, *grid.shape)`` or
        ``(*grid.shape)`` tensor is evaluated on each grid (pointwise values; aliasing of a
        non band-limited mean is the caller's business). A tensor needs ``mean_grid`` and is
        Fourier-resampled to the evaluation grid.
    mean_grid : Grid, optional
        The grid the tensor ``mean`` lives on.

    Notes
    -----
    Calling ``oracle(x_t, t, grid)`` returns ``eta_hat = -s(t) Q grad log p_t(x_t)``
    (shape of ``x_t``), computed in float64 and returned in ``x_t``'s dtype.
    """

    def __init__(self, sde: SDE, cov: Covariance, mean: MeanSpec = None, mean_grid: Grid | None = None):
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a fsdiff SDE; got {type(sde).__name__}")
        if not isinstance(cov, Covariance):
            raise TypeError(f"cov must be a fsdiff Covariance; got {type(cov).__name__}")
        if isinstance(mean, torch.Tensor):
            if mean_grid is None:
                raise ValueError("a tensor mean needs mean_grid (the grid it is sampled on)")
            mean_grid.check(mean, "mean", min_leading=0)
        elif mean is not None and not callable(mean):
            raise TypeError(f"mean must be None, a tensor or a callable grid -> tensor; got {type(mean).__name__}")
        self.sde = sde
        self.cov = cov
        self._mean = mean
        self._mean_grid = mean_grid

    # -- data model -------------------------------------------------------------
    def mean_on(self, grid: Grid, channels: int = 1) -> torch.Tensor | None:
        """The data mean on ``grid``, float64 of shape ``(channels, *grid.shape)``, or ``None`` if zero."""
        if self._mean is None:
            return None
        if isinstance(self._mean, torch.Tensor):
            if self._mean_grid.ndim != grid.ndim:
                raise ValueError(f"mean lives on {self._mean_grid.ndim}-D {self._mean_grid!r}; cannot evaluate on {grid.ndim}-D {grid!r}")
            mu = resample(self._mean.double(), self._mean_grid, grid)
        else:
            mu = torch.as_tensor(self._mean(grid)).double()
            grid.check(mu, "mean(grid)", min_leading=0)
        if mu.ndim == grid.ndim:
            mu = mu.expand(channels, *grid.shape)
        if mu.ndim != grid.ndim + 1 or mu.shape[0] not in (1, channels):
            raise ValueError(f"mean has shape {tuple(mu.shape)}; expected ({channels}, *{grid.shape}) or {grid.shape}")
        return mu.expand(channels, *grid.shape)

    def marginal_eigenvalues(self, t, grid: Grid) -> torch.Tensor:
        """``v_k(t) = m(t)² c_k + s(t)² q_k`` in rfft layout; ``t`` float -> ``rfft_shape``, ``(B,)`` -> ``(B, *rfft_shape)``."""
        t = as_time(t).double().cpu()
        m2, s2 = self.sde.mean_scale(t) ** 2, self.sde.std(t) ** 2
        view = t.shape + (1,) * grid.ndim
        return m2.reshape(view) * self.cov.eigenvalues(grid) + s2.reshape(view) * self.sde.covariance.eigenvalues(grid)

    def _check(self, x: torch.Tensor, grid: Grid) -> None:
        grid.check(x, "x_t", min_leading=2)
        if x.ndim != grid.ndim + 2:
            raise ValueError(f"x_t has shape {tuple(x.shape)}; expected (batch, channels, *{grid.shape})")

    # -- the score ----------------------------------------------------------------
    def qscore(self, x: torch.Tensor, t, grid: Grid) -> torch.Tensor:
        """``Q grad log p_t(x) = -Q Sigma_t^+ (x - m mu)``: ``(B, C, *grid.shape) -> same``."""
        self._check(x, grid)
        tt = batch_times(as_time(t).detach(), x.shape[0], device="cpu")
        mult = _score_multiplier(self, tt, grid)
        r = x.double()
        mu = self.mean_on(grid, x.shape[1])
        if mu is not None:
            m = self.sde.mean_scale(tt).reshape(-1, *([1] * (x.ndim - 1)))
            r = r - m.to(r.device) * mu.to(r.device)
        out = grid.irfft(grid.rfft(r) * mult.to(r.device))
        return out.to(x.dtype)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Predicted coloured noise ``eta_hat = -s(t) Q grad log p_t(x_t)``."""
        tt = batch_times(as_time(t).detach(), x_t.shape[0], device="cpu")
        qs = self.qscore(x_t.double(), tt, grid)
        return qscore_to_eta(qs, tt.to(qs.device), self.sde).to(x_t.dtype)

    def denoise(self, x_t: torch.Tensor, t, grid: Grid) -> torch.Tensor:
        """Posterior mean ``E[X_0 | X_t = x_t]`` (Tweedie), shape of ``x_t``."""
        tt = batch_times(as_time(t).detach(), x_t.shape[0], device="cpu")
        return eta_to_x0(x_t.double(), self(x_t.double(), tt, grid), tt.to(x_t.device), self.sde).to(x_t.dtype)

    # -- analytic references ---------------------------------------------------------
    def expected_dsm_minimum(self, t, grid: Grid, channels: int = 1) -> torch.Tensor:
        """Analytic minimum of ``E ||eta_hat(X_t, t) - eta||²_{L²}`` at time ``t`` on ``grid``.

        Per mode, ``eta_k`` given ``x_t`` has variance ``q_k m² c_k / (v_k |D|)`` (Gaussian
        conditioning of the forward-normalised coefficient); Parseval
        (``||u||² = |D| sum_k |u_hat_k|²``) turns that into
        ``channels * sum_k q_k m² c_k / v_k`` over the grid's kept modes, which the oracle
        attains. Converges as the grid is refined (bounded by ``trace(Q)``).
        ``t`` float -> 0-d tensor, ``(B,)`` -> ``(B,)`` (float64).
        """
        t = as_time(t).double().cpu()
        v = self.marginal_eigenvalues(t, grid)
        m2 = (self.sde.mean_scale(t) ** 2).reshape(t.shape + (1,) * grid.ndim)
        per_mode = self.sde.covariance.eigenvalues(grid) * m2 * self.cov.eigenvalues(grid) * _pinv(v)
        return channels * (per_mode * grid.rfft_weights).sum(dim=tuple(range(-grid.ndim, 0)))

    def em_chain_moments(
        self, times: torch.Tensor, grid: Grid, denoise: bool = False, start: str = "prior"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact law of the reverse Euler–Maruyama chain of :func:`fsdiff.sampling.sample` with this oracle.

        Per mode the chain is linear Gaussian, ``x <- A_i x + b_i + sqrt(g² h) xi``, so its
        output law is ``N(M_k, V_k / |D|)`` per coefficient (complex modes: ``V_k / (2|D|)``
        per real part), with no Monte Carlo error.

        Parameters
        ----------
        times : (N+1,) decreasing tensor from ``T`` to ``eps``.
        start : ``"prior"`` (``N(0, s(T)² Q)``, the sampler's start) or ``"exact"`` (``p_T``).

        Returns
        -------
        (mean, var)
            ``mean`` the forward-normalised Fourier coefficients of the
            output mean, complex ``(C, *rfft_shape)`` with C the mean's channels (1 if zero mean);
            ``var`` the eigenvalues of the output covariance, float64 ``rfft_shape``
            (compare with ``v_k`` or ``c_k``).
        """
        times = torch.as_tensor(times, dtype=torch.float64).cpu()
        q = self.sde.covariance.eigenvalues(grid)
        mu = self.mean_on(grid)
        mu_hat = grid.rfft(mu) if mu is not None else torch.zeros((1,) + grid.rfft_shape, dtype=torch.complex128)
        T = times[0]
        if start == "prior":
            V = self.sde.std(T) ** 2 * q
            M = torch.zeros_like(mu_hat)
        elif start == "exact":
            V = self.marginal_eigenvalues(T, grid)
            M = self.sde.mean_scale(T) * mu_hat
        else:
            raise ValueError(f"start must be 'prior' or 'exact'; got {start!r}")
        for t0, t1 in zip(times[:-1], times[1:]):
            h = t0 - t1
            a, g2 = self.sde.drift_coeff(t0), self.sde.diffusion_sq(t0)
            k = q * _pinv(self.marginal_eigenvalues(t0, grid))  # -qscore = k (x - m mu)
            # x1 = x - h (a x + g² k (x - m mu)) + sqrt(g² h) xi
            A = 1 - h * (a + g2 * k)
            b = h * g2 * k * self.sde.mean_scale(t0) * mu_hat
            M = A * M + b
            V = A**2 * V + g2 * h * q
        if denoise:
            t = times[-1]
            m, s = self.sde.mean_scale(t), self.sde.std(t)
            k = q * _pinv(self.marginal_eigenvalues(t, grid))
            # x0 = (x - s eta_hat)/m, eta_hat = s k (x - m mu)
            A = (1 - s**2 * k) / m
            M = A * M + s**2 * k * mu_hat
            V = A**2 * V
        return M, V

    def __repr__(self) -> str:
        return f"GaussianScore({self.sde!r}, cov={self.cov!r}, mean={'zero' if self._mean is None else 'given'})"


class GaussianMixtureScore:
    """Exact score of the function-space Gaussian mixture ``sum_j w_j N(mu_j, C)`` under ``sde``.

    Parameters
    ----------
    sde : SDE
    means : tensor ``(K, C, *mean_grid.shape)``
        Component means on a reference grid; Fourier-resampled to each evaluation grid.
    mean_grid : Grid
    weights : tensor ``(K,)``
        Positive, normalised internally.
    cov : Covariance
        Shared data covariance C.

    Notes
    -----
    **Posterior weights.** At time t component j is ``N(m mu_j, Sigma_t)``,
    ``Sigma_t = m² C + s² Q``. Densities of Gaussian measures in function space exist only
    relative to one another; relative to ``N(0, Sigma_t)`` the Cameron–Martin formula gives::

        log dN(m mu_j, Sigma_t)/dN(0, Sigma_t) (x) = m <Sigma_t^+ mu_j, x> - ½ m² ||Sigma_t^{+1/2} mu_j||²,

    so the posterior weights are ``softmax_j(log w_j + that)``. Both terms are sums over
    Fourier modes of ``Re(conj(mu_hat) x_hat) / v_k`` with Parseval weights and ``|D|``: they
    do not grow with resolution (the means are band-limited to ``mean_grid``, so a finer
    grid adds only zero terms). The mixture is defined through the modes the evaluation
    grid keeps: on a grid coarser than ``mean_grid`` the means are truncated to its modes.
    Then ``Q grad log p_t(x) = -Q Sigma_t^+ (x - m sum_j pi_j(x) mu_j)``.
    """

    def __init__(self, sde: SDE, means: torch.Tensor, mean_grid: Grid, weights: torch.Tensor | Sequence[float], cov: Covariance):
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a fsdiff SDE; got {type(sde).__name__}")
        if not isinstance(cov, Covariance):
            raise TypeError(f"cov must be a fsdiff Covariance; got {type(cov).__name__}")
        mean_grid.check(means, "means", min_leading=2)
        if means.ndim != mean_grid.ndim + 2:
            raise ValueError(f"means has shape {tuple(means.shape)}; expected (K, channels, *{mean_grid.shape})")
        w = torch.as_tensor(weights, dtype=torch.float64).cpu()
        if w.shape != (means.shape[0],):
            raise ValueError(f"weights has shape {tuple(w.shape)}; expected ({means.shape[0]},) to match means")
        if not (torch.isfinite(w).all() and (w > 0).all()):
            raise ValueError(f"weights must be finite and positive; got {w.tolist()}")
        self.sde = sde
        self.cov = cov
        self.means = means.detach().double().cpu()
        self.mean_grid = mean_grid
        self.weights = w / w.sum()

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def channels(self) -> int:
        return self.means.shape[1]

    def means_on(self, grid: Grid) -> torch.Tensor:
        """Component means on ``grid``, float64 ``(K, C, *grid.shape)``."""
        if grid.ndim != self.mean_grid.ndim:
            raise ValueError(f"means live on {self.mean_grid.ndim}-D {self.mean_grid!r}; cannot evaluate on {grid.ndim}-D {grid!r}")
        return resample(self.means, self.mean_grid, grid)

    def log_posterior_weights(self, x: torch.Tensor, t, grid: Grid) -> torch.Tensor:
        """``log pi_j(x)`` of the components at time ``t``: ``(B, C, *grid.shape) -> (B, K)`` float64."""
        grid.check(x, "x_t", min_leading=2)
        if x.ndim != grid.ndim + 2 or x.shape[1] != self.channels:
            raise ValueError(f"x_t has shape {tuple(x.shape)}; expected (batch, {self.channels}, *{grid.shape})")
        tt = batch_times(as_time(t).detach(), x.shape[0], device="cpu")
        m = self.sde.mean_scale(tt)  # (B,)
        inv_v = _pinv(GaussianScore.marginal_eigenvalues(self, tt, grid)) * grid.rfft_weights * grid.volume  # (B, *rfft)
        mu_hat = grid.rfft(self.means_on(grid))  # (K, C, *rfft)
        x_hat = grid.rfft(x.double()).cpu()  # (B, C, *rfft)
        sd = tuple(range(-grid.ndim - 1, 0))  # channel + spectral dims
        # <Sigma^+ mu_j, x>: (B, K)
        cross = (mu_hat.conj()[None] * x_hat[:, None]).real * inv_v[:, None, None]
        cross = cross.sum(dim=sd)
        quad = (mu_hat.abs().square()[None] * inv_v[:, None, None]).sum(dim=sd)  # (B, K)
        logits = self.weights.log()[None] + m[:, None] * cross - 0.5 * m[:, None] ** 2 * quad
        return torch.log_softmax(logits, dim=1)

    def qscore(self, x: torch.Tensor, t, grid: Grid) -> torch.Tensor:
        """``Q grad log p_t(x)``: ``(B, C, *grid.shape) -> same``."""
        tt = batch_times(as_time(t).detach(), x.shape[0], device="cpu")
        pi = self.log_posterior_weights(x, tt, grid).exp()  # (B, K)
        mix_mean = torch.einsum("bk,k...->b...", pi, self.means_on(grid))  # (B, C, *shape)
        m = self.sde.mean_scale(tt).reshape(-1, *([1] * (x.ndim - 1)))
        r = x.double().cpu() - m * mix_mean
        mult = _score_multiplier(self, tt, grid)
        return grid.irfft(grid.rfft(r) * mult).to(device=x.device, dtype=x.dtype)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Predicted coloured noise ``eta_hat = -s(t) Q grad log p_t(x_t)``."""
        tt = batch_times(as_time(t).detach(), x_t.shape[0], device="cpu")
        qs = self.qscore(x_t.double(), tt, grid)
        return qscore_to_eta(qs, tt.to(qs.device), self.sde).to(x_t.dtype)

    def classify(self, x0: torch.Tensor, grid: Grid, t: float = 0.0) -> torch.Tensor:
        """Most probable component of each sample (posterior at time ``t``, default data time): ``(B,)`` int64."""
        return self.log_posterior_weights(x0, t, grid).argmax(dim=1)

    def sample(
        self, grid: Grid, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact draws of the mixture on ``grid``: ``(x (n, C, *grid.shape), component (n,))``.

        Components first (``torch.multinomial``), then ``N(0, C)`` noise (nested across grids).
        """
        if n < 1:
            raise ValueError(f"n must be positive; got {n}")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = self.cov.sample(grid, n, self.channels, generator=generator, dtype=torch.float64)
        x = self.means_on(grid)[comp] + noise
        return x.to(dtype), comp

    # marginal_eigenvalues is shared with GaussianScore (same formula, needs .sde and .cov)
    marginal_eigenvalues = GaussianScore.marginal_eigenvalues

    def __repr__(self) -> str:
        return f"GaussianMixtureScore({self.sde!r}, K={self.n_components}, cov={self.cov!r})"
