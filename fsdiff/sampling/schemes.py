"""One step of every sampling scheme, on one run's state (model, SDE, options, evaluation count).

:class:`Run` holds what a sampling run shares; its ``STEPPERS`` table maps ``"em"``, ``"pc"`` and
``"ode"`` (Heun) to one step each, :meth:`Run.run_gauss` integrates ``"ode_gauss"`` in the
:class:`GaussCoordinates` of a model's Gaussian part, and :meth:`Run.run_adaptive` hands the
probability-flow ODE to scipy's RK45. The schemes themselves are described in :mod:`fsdiff.sampling`.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from ..grid import Grid
from ..parametrization import eta_to_qscore
from ..sde import SDE
from .randomness import seeded

__all__ = ["Run", "GaussCoordinates", "evaluate"]


def evaluate(model, x: torch.Tensor, t: float, grid: Grid, chunk_size: int | None) -> torch.Tensor:
    """``eta_hat = model(x, t, grid)`` (or any callable of that signature) on micro-batches of ``chunk_size``."""
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    if chunk_size is None or chunk_size >= x.shape[0]:
        out = model(x, tt, grid)
    else:
        out = torch.cat([model(xc, tc, grid) for xc, tc in zip(x.split(chunk_size), tt.split(chunk_size))])
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model returned {shape} for x_t of shape {tuple(x.shape)}; it must return eta_hat of the same shape")
    if not bool(torch.isfinite(out).all()):
        state = "a finite input" if bool(torch.isfinite(x).all()) else "a non-finite input"
        raise FloatingPointError(f"the model returned non-finite values at t = {float(t):.4g} on {state} of shape "
                                 f"{tuple(x.shape)}: check the model (its weights, or its inputs' range)")
    return out.to(x.dtype)


def _check_step(x: torch.Tensor, sampler: str, i: int, times: torch.Tensor) -> None:
    """Name the step at which the state went non-finite although every model output was finite."""
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"sampler {sampler!r} went non-finite at step {i + 1} of {times.numel() - 1} (t = {float(times[i]):.4g} -> "
            f"{float(times[i + 1]):.4g}) although the model's outputs were finite: the step is too large for the "
            "model's stiffness (use more steps, time_grid='quadratic' or 'edm', or a larger eps)")


class Run:
    """Shared state of one sampling run: model, SDE, options, counters."""

    def __init__(self, model, sde: SDE, n: int, channels: int, chunk_size, dtype, device, snr, corrector_steps,
                 rtol, atol, pbar):
        self.model, self.sde, self.n, self.channels = model, sde, n, channels
        self.chunk_size, self.dtype, self.device = chunk_size, dtype, device
        self.snr, self.corrector_steps, self.rtol, self.atol = snr, corrector_steps, rtol, atol
        self.pbar = pbar
        self.nfe = 0

    def eta(self, x: torch.Tensor, t: float, grid: Grid) -> torch.Tensor:
        self.nfe += 1
        return evaluate(self.model, x, t, grid, self.chunk_size)

    def qscore(self, x: torch.Tensor, t: float, grid: Grid) -> torch.Tensor:
        return eta_to_qscore(self.eta(x, t, grid), t, self.sde)

    def noise(self, grid: Grid, seed: int) -> torch.Tensor:
        return self.sde.covariance.sample(grid, self.n, self.channels, generator=seeded(seed, self.device),
                                          dtype=self.dtype, device=self.device)

    # -- one step of each scheme ---------------------------------------------------
    def em_step(self, x, t0: float, t1: float, grid: Grid, seed: int) -> torch.Tensor:
        qs = self.qscore(x, t0, grid)
        g2 = float(self.sde.diffusion_sq(t0))
        return x + (t1 - t0) * self.sde.reverse_drift(x, t0, qs) + math.sqrt(g2 * (t0 - t1)) * self.noise(grid, seed)

    def corrector(self, x, t: float, grid: Grid, seed: int) -> torch.Tensor:
        qs = self.qscore(x, t, grid)
        xi = self.noise(grid, seed)
        cov = self.sde.covariance
        num = cov.cameron_martin_norm(xi, grid).double()
        den = cov.cameron_martin_norm(qs, grid).double()
        step = torch.where(den > 0, 2 * (self.snr * num / den.clamp_min(1e-300)) ** 2, torch.zeros_like(den))
        view = (-1,) + (1,) * (x.ndim - 1)
        step = step.to(x.dtype).reshape(view)
        return x + step * qs + (2 * step).sqrt() * xi

    def heun_step(self, x, t0: float, t1: float, grid: Grid) -> torch.Tensor:
        d0 = self.sde.ode_drift(x, t0, self.qscore(x, t0, grid))
        xe = x + (t1 - t0) * d0
        d1 = self.sde.ode_drift(xe, t1, self.qscore(xe, t1, grid))
        return x + (t1 - t0) * 0.5 * (d0 + d1)

    # -- the PF-ODE in the Gaussian coordinates (sampler "ode_gauss") -------------
    def gauss_velocity(self, y: torch.Tensor, t: float, coords: "GaussCoordinates") -> torch.Tensor:
        """``dy/dt = g² e_hat / (2 s sqrt(v))``, ``e`` the network residual at ``x(y)``."""
        m, s, sv = coords.scales(t)
        g2 = float(self.sde.diffusion_sq(t))
        self.nfe += 1
        e = evaluate(self.model.residual, coords.to_x(y, t), t, coords.grid, self.chunk_size)
        e_hat = coords.grid.rfft(e.double())
        return torch.where(sv > 0, 0.5 * g2 * e_hat / (s * sv.clamp_min(1e-300)), torch.zeros_like(e_hat))

    def gauss_heun_step(self, y: torch.Tensor, t0: float, t1: float, coords: "GaussCoordinates") -> torch.Tensor:
        d0 = self.gauss_velocity(y, t0, coords)
        ye = y + (t1 - t0) * d0
        return y + (t1 - t0) * 0.5 * (d0 + self.gauss_velocity(ye, t1, coords))

    def run_gauss(self, x, times: torch.Tensor, grid: Grid, record: dict[int, list[float]], traj: dict,
                  denoise: bool, from_prior: bool) -> torch.Tensor:
        """Integrate in ``y`` over all of ``times``; end with the exact Gaussian flow to t = 0 if ``denoise``.

        ``from_prior``: ``x = s(T) xi`` is the prior draw; then ``y_T = xi_hat / sqrt(lambda)`` (standard
        per mode), i.e. the run starts from the Gaussian part's own marginal at T instead of ``N(0, s² Q)``.
        """
        coords = GaussCoordinates(self.model, self.sde, grid, self.device, self.dtype)
        y = coords.from_prior(x, float(times[0])) if from_prior else coords.to_y(x, float(times[0]))
        for i in range(times.numel() - 1):
            t0, t1 = float(times[i]), float(times[i + 1])
            y = self.gauss_heun_step(y, t0, t1, coords)
            _check_step(y, "ode_gauss", i, times)
            for key in record.get(i + 1, ()):
                traj[key] = coords.to_x(y, t1)
            if self.pbar is not None:
                self.pbar.update(1)
        return coords.to_data(y) if denoise else coords.to_x(y, float(times[-1]))

    # -- a stretch of the time grid ----------------------------------------------
    def pc_step(self, x, t0: float, t1: float, grid: Grid, seeds: list[int]) -> torch.Tensor:
        for j in range(self.corrector_steps):
            x = self.corrector(x, t0, grid, seeds[1 + j])
        return self.em_step(x, t0, t1, grid, seeds[0])

    #: the stepper table: scheme -> one step ``(run, x, t0, t1, grid, seeds) -> x``
    STEPPERS = {
        "em": lambda run, x, t0, t1, grid, seeds: run.em_step(x, t0, t1, grid, seeds[0]),
        "pc": lambda run, x, t0, t1, grid, seeds: run.pc_step(x, t0, t1, grid, seeds),
        "ode": lambda run, x, t0, t1, grid, seeds: run.heun_step(x, t0, t1, grid),
    }

    def run_fixed(self, sampler: str, x, times: torch.Tensor, i0: int, i1: int, grid: Grid,
                  step_seeds: list[list[int]], record: dict[int, list[float]], traj: dict) -> torch.Tensor:
        """Advance ``x`` from node ``i0`` to node ``i1`` of ``times``; store states at recorded nodes."""
        step = self.STEPPERS[sampler]
        for i in range(i0, i1):
            t0, t1 = float(times[i]), float(times[i + 1])
            x = step(self, x, t0, t1, grid, step_seeds[i])
            _check_step(x, sampler, i, times)
            for key in record.get(i + 1, ()):
                traj[key] = x.clone()
            if self.pbar is not None:
                self.pbar.update(1)
        return x

    def run_adaptive(self, x, t_start: float, t_end: float, grid: Grid, traj_times: Iterable[float], traj: dict) -> torch.Tensor:
        """Integrate the probability-flow ODE from ``t_start`` down to ``t_end`` with RK45."""
        from scipy.integrate import solve_ivp

        shape = x.shape

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            xt = torch.from_numpy(y).reshape(shape).to(device=self.device, dtype=self.dtype)
            d = self.sde.ode_drift(xt, float(t), self.qscore(xt, float(t), grid))
            if self.pbar is not None:
                self.pbar.update(1)
            return d.detach().to("cpu", torch.float64).reshape(-1).numpy()

        wanted = sorted({float(s) for s in traj_times if t_end < s <= t_start}, reverse=True)
        t_eval = wanted + [t_end]
        y0 = x.detach().to("cpu", torch.float64).reshape(-1).numpy()
        sol = solve_ivp(fun, (t_start, t_end), y0, method="RK45", rtol=self.rtol, atol=self.atol, t_eval=t_eval)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed between t={t_start} and t={t_end}: {sol.message}")
        cols = {float(tv): j for j, tv in enumerate(sol.t)}
        for s in wanted:
            traj[s] = torch.from_numpy(sol.y[:, cols[s]]).reshape(shape).to(device=self.device, dtype=self.dtype)
        return torch.from_numpy(sol.y[:, -1].copy()).reshape(shape).to(device=self.device, dtype=self.dtype)


class GaussCoordinates:
    """Per-mode coordinates ``y_k = (x - m mu)_k / sqrt(m² c_k + s² lambda_k)`` of a model's Gaussian part on one grid.

    ``mu`` ``(C, *grid.shape)``, ``c`` and ``lambda`` ``(C, *rfft_shape)`` come from
    ``model.gaussian_statistics(grid)``; ``y`` has the rfft shape ``(n, C, *rfft_shape)``, complex128.
    """

    def __init__(self, model, sde: SDE, grid: Grid, device, dtype):
        self.mu, self.c, self.lam = (v.to(device) for v in model.gaussian_statistics(grid))
        self.sde, self.grid, self.dtype = sde, grid, dtype

    def scales(self, t: float):
        """``(m, s, sqrt(v))`` at time ``t``; ``sqrt(v)`` is ``(C, *rfft_shape)`` float64."""
        m, s = float(self.sde.mean_scale(t)), float(self.sde.std(t))
        return m, s, (m * m * self.c + s * s * self.lam).clamp_min(0).sqrt()

    def to_y(self, x: torch.Tensor, t: float) -> torch.Tensor:
        m, _, sv = self.scales(t)
        r_hat = self.grid.rfft(x.double() - m * self.mu)
        return torch.where(sv > 0, r_hat / sv.clamp_min(1e-300), torch.zeros_like(r_hat))

    def to_x(self, y: torch.Tensor, t: float) -> torch.Tensor:
        m, _, sv = self.scales(t)
        return (m * self.mu + self.grid.irfft(y * sv)).to(self.dtype)

    def from_prior(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """``y`` of the prior draw ``x = s(t) xi``: ``xi_hat / sqrt(lambda)``, standard per mode."""
        xi_hat = self.grid.rfft(x.double()) / float(self.sde.std(t))
        return torch.where(self.lam > 0, xi_hat / self.lam.clamp_min(1e-300).sqrt(), torch.zeros_like(xi_hat))

    def to_data(self, y: torch.Tensor) -> torch.Tensor:
        """The exact Gaussian flow of ``y`` to ``t = 0``: ``mu + irfft(sqrt(c) y)``."""
        return (self.mu + self.grid.irfft(y * self.c.clamp_min(0).sqrt())).to(self.dtype)
