"""Samplers for function-space diffusion: reverse SDE, predictor–corrector, probability-flow ODE.

Plain functions of ``(model, sde, grid, n, ...)`` with the random source passed in. ``model``
keeps the score-model protocol ``model(x_t, t, grid) -> eta_hat``; the conversion to
``Q grad log p_t`` goes through :mod:`fsdiff.parametrization`. Times run from ``T`` down to
``eps > 0`` on a grid from :func:`fsdiff.timesteps.time_steps`.

Samplers (``sampler=``)
-----------------------
``"em"``
    Euler–Maruyama on the reverse SDE ``dX = [a X - g² Q grad log p_t] dt + g dW^Q``:
    ``x <- x - h (a x - g² qscore) + sqrt(g² h) xi``, ``xi ~ N(0, Q)`` (coloured, nested),
    coefficients at the step's start. ``steps`` score evaluations.
``"pc"``
    Predictor–corrector (Song et al. 2021): at each ``t_i``, ``corrector_steps`` rounds of
    Q-preconditioned Langevin targeting ``p_{t_i}``, then an EM predictor step.
    ``steps * (1 + corrector_steps)`` evaluations. See *Corrector* below.
``"ode"``
    Probability-flow ODE ``dX = [a X - ½ g² qscore] dt`` with Heun's method (2nd order;
    ``2 * steps`` evaluations, Heun on every step since ``eps > 0``).
``"ode_gauss"``
    Heun on the same ODE written in the Gaussian coordinates of a model with a Gaussian part
    (:class:`~fsdiff.models.SpectralPreconditioner`: data mean ``mu``, data eigenvalues ``c_k``),
    ``y_k = (x - m mu)_k / sqrt(v_k)``, ``v_k = m² c_k + s² lambda_k``. The Gaussian part of the drift
    cancels exactly and ``dy_k/dt = ½ g² e_k / (s sqrt(v_k))``, with ``e = eta_hat - eta_G`` the
    network's residual, so the Gaussian part (every mode above the network's band, and the whole
    model while it is untrained) is transported exactly, whatever the step count. It starts from
    the Gaussian part's marginal at T (``y_T`` standard normal per mode: the prior draw whitened),
    not from ``N(0, s(T)² Q)``, which misses ``m(T)² c_k``. The run ends with
    the exact Gaussian flow from ``eps`` to 0, ``x = mu + irfft(sqrt(c) y)``, instead of the Tweedie
    step (which shrinks noise-dominated modes to their posterior mean). ``2 * steps`` evaluations.
``"ode_adaptive"``
    The same ODE with ``scipy.integrate.solve_ivp`` (RK45, ``rtol``/``atol``) on the whole
    batch as one float64 vector (the step size control couples the samples of a batch, as in
    Song et al.); ``steps`` and ``time_grid`` are unused; the number of evaluations is
    reported in ``info["nfe"]``.

``denoise=True`` (default) ends with one Tweedie step at ``eps``,
``x0_hat = (x - s eta_hat) / m`` (one more evaluation).

Corrector: the Langevin step in function space
----------------------------------------------
Langevin dynamics for ``p_t`` preconditioned by Q, ``dX = Q grad log p_t dt + sqrt(2) dW^Q``,
leaves ``p_t`` invariant and is well defined on L² (its noise is trace class). One step is

    x <- x + e qscore(x) + sqrt(2 e) xi,        xi ~ N(0, Q).

It is ordinary Langevin in the whitened coordinates ``y = Q^{-1/2} x`` (identity
preconditioner, ``grad_y log p = Q^{1/2} grad_x log p``). Song et al.'s signal-to-noise rule
``e = 2 (r ||z|| / ||grad_y log p||)²`` in those coordinates reads, back in x,

    e = 2 (r ||xi||_Q / ||qscore||_Q)²,     ||u||_Q = ||Q^{-1/2} u||_{L²} (Cameron–Martin norm),

computed per sample in Fourier (pseudo-inverse on modes where ``q_k = 0``). Both norms grow
with the number of modes, but their ratio converges: for Gaussian ``p_t`` with eigenvalues
``v_k`` it is the harmonic mean of ``v_k / q_k`` over the kept modes, which tends to ``s(t)²``
once the noise dominates the fine modes, so ``e -> 2 r² s(t)²`` under refinement. The
stability limit of the step is ``e < 2 min_k v_k / q_k``, and the harmonic mean respects the
minimum far better than an L²-norm ratio (dominated by the low, data-dominated modes), which
overshoots on the fine modes. ``r = snr`` (default 0.16, Song et al.'s VP choice; their extra
factor ``alpha_i = 1 - beta_i / N`` is taken as 1).

Randomness, chunking, nesting
-----------------------------
The passed ``generator`` is used for one call that draws an int64 seed per random draw of
the run (prior, and each step's predictor/corrector noise); every draw then uses its own
``torch.Generator`` seeded with its seed and is made for the **whole batch**. Hence

* ``chunk_size`` (evaluating the model on micro-batches) gives bit-identical results to
  unchunked runs, provided the model treats batch items independently in floating point;
* with the same seed, runs on two grids use the same random functions (noise draws are
  nested, :meth:`Covariance.sample`): with an exact (mode-diagonal) oracle, the coarse run is
  the Fourier restriction of the fine one up to rounding;
* :func:`sample_coarse_to_fine` shares those draws with :func:`sample`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .covariance import Covariance
from .grid import Grid, resample
from .parametrization import eta_to_qscore, eta_to_x0
from .sde import SDE
from .timesteps import time_steps

__all__ = ["sample", "sample_coarse_to_fine", "SAMPLERS", "SAMPLER_CHOICES", "default_sampler", "resolve_sampler"]

SAMPLERS = ("em", "pc", "ode", "ode_gauss", "ode_adaptive")
#: what ``sampler=`` accepts: a scheme of :data:`SAMPLERS`, or ``"auto"`` (:func:`default_sampler`)
SAMPLER_CHOICES = ("auto",) + SAMPLERS
_SEED_HIGH = 2**62


# --------------------------------------------------------------------------- helpers
def default_sampler(model) -> str:
    """``"ode_gauss"`` for models with a Gaussian part (``gaussian_statistics`` and ``residual``), else ``"ode"``.

    The measured default (``resolution_studies/mnist_quality.py --sampler-table``); the command line's
    ``--sampler auto`` resolves through it.
    """
    return "ode_gauss" if hasattr(model, "gaussian_statistics") and hasattr(model, "residual") else "ode"


def resolve_sampler(sampler: str, model) -> str:
    """The scheme ``sampler`` names: ``"auto"`` becomes :func:`default_sampler` of ``model``."""
    if sampler == "auto":
        return default_sampler(model)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLER_CHOICES}")
    return sampler


def _check_common(sde: SDE, grid: Grid, n: int, channels: int, sampler: str, chunk_size, snr: float, corrector_steps: int) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a fsdiff SDE; got {type(sde).__name__}")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a fsdiff Grid; got {type(grid).__name__}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    if not (isinstance(n, int) and n >= 1 and isinstance(channels, int) and channels >= 1):
        raise ValueError(f"n and channels must be positive integers; got n={n!r}, channels={channels!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive integer; got {chunk_size!r}")
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be positive; got {snr}")
    if not (isinstance(corrector_steps, int) and corrector_steps >= 0):
        raise ValueError(f"corrector_steps must be a non-negative integer; got {corrector_steps!r}")
    sde.check_noise(grid.ndim)
    sde.covariance.eigenvalues(grid)  # raises for a covariance built for another dimension


def _draws_per_step(sampler: str, corrector_steps: int) -> int:
    return {"em": 1, "pc": 1 + corrector_steps, "ode": 0, "ode_gauss": 0, "ode_adaptive": 0}[sampler]


def _seeds(generator: torch.Generator | None, count: int) -> list[int]:
    if count == 0:
        return []
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, _SEED_HIGH, (count,), generator=generator, dtype=torch.int64, device=device).tolist()


def _gen(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def _eval(model, x: torch.Tensor, t: float, grid: Grid, chunk_size: int | None) -> torch.Tensor:
    """``eta_hat = model(x, t, grid)`` (or any callable of that signature) on micro-batches of ``chunk_size``."""
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    if chunk_size is None or chunk_size >= x.shape[0]:
        out = model(x, tt, grid)
    else:
        out = torch.cat([model(xc, tc, grid) for xc, tc in zip(x.split(chunk_size), tt.split(chunk_size))])
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model returned {shape} for x_t of shape {tuple(x.shape)}; it must return eta_hat of the same shape")
    return out.to(x.dtype)


class _Run:
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
        return _eval(self.model, x, t, grid, self.chunk_size)

    def qscore(self, x: torch.Tensor, t: float, grid: Grid) -> torch.Tensor:
        return eta_to_qscore(self.eta(x, t, grid), t, self.sde)

    def noise(self, grid: Grid, seed: int) -> torch.Tensor:
        return self.sde.covariance.sample(grid, self.n, self.channels, generator=_gen(seed, self.device),
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
    def gauss_velocity(self, y: torch.Tensor, t: float, coords: "_GaussCoordinates") -> torch.Tensor:
        """``dy/dt = g² e_hat / (2 s sqrt(v))``, ``e`` the network residual at ``x(y)``."""
        m, s, sv = coords.scales(t)
        g2 = float(self.sde.diffusion_sq(t))
        self.nfe += 1
        e = _eval(self.model.residual, coords.to_x(y, t), t, coords.grid, self.chunk_size)
        e_hat = coords.grid.rfft(e.double())
        return torch.where(sv > 0, 0.5 * g2 * e_hat / (s * sv.clamp_min(1e-300)), torch.zeros_like(e_hat))

    def gauss_heun_step(self, y: torch.Tensor, t0: float, t1: float, coords: "_GaussCoordinates") -> torch.Tensor:
        d0 = self.gauss_velocity(y, t0, coords)
        ye = y + (t1 - t0) * d0
        return y + (t1 - t0) * 0.5 * (d0 + self.gauss_velocity(ye, t1, coords))

    def run_gauss(self, x, times: torch.Tensor, grid: Grid, record: dict[int, list[float]], traj: dict,
                  denoise: bool, from_prior: bool) -> torch.Tensor:
        """Integrate in ``y`` over all of ``times``; end with the exact Gaussian flow to t = 0 if ``denoise``.

        ``from_prior``: ``x = s(T) xi`` is the prior draw; then ``y_T = xi_hat / sqrt(lambda)`` (standard
        per mode), i.e. the run starts from the Gaussian part's own marginal at T instead of ``N(0, s² Q)``.
        """
        coords = _GaussCoordinates(self.model, self.sde, grid, self.device, self.dtype)
        y = coords.from_prior(x, float(times[0])) if from_prior else coords.to_y(x, float(times[0]))
        for i in range(times.numel() - 1):
            t0, t1 = float(times[i]), float(times[i + 1])
            y = self.gauss_heun_step(y, t0, t1, coords)
            for key in record.get(i + 1, ()):
                traj[key] = coords.to_x(y, t1)
            if self.pbar is not None:
                self.pbar.update(1)
        return coords.to_data(y) if denoise else coords.to_x(y, float(times[-1]))

    # -- a stretch of the time grid ----------------------------------------------
    def run_fixed(self, sampler: str, x, times: torch.Tensor, i0: int, i1: int, grid: Grid,
                  step_seeds: list[list[int]], record: dict[int, list[float]], traj: dict) -> torch.Tensor:
        """Advance ``x`` from node ``i0`` to node ``i1`` of ``times``; store states at recorded nodes."""
        for i in range(i0, i1):
            t0, t1 = float(times[i]), float(times[i + 1])
            if sampler == "em":
                x = self.em_step(x, t0, t1, grid, step_seeds[i][0])
            elif sampler == "pc":
                for j in range(self.corrector_steps):
                    x = self.corrector(x, t0, grid, step_seeds[i][1 + j])
                x = self.em_step(x, t0, t1, grid, step_seeds[i][0])
            else:
                x = self.heun_step(x, t0, t1, grid)
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


class _GaussCoordinates:
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


def _record_nodes(times: torch.Tensor, wanted: Sequence[float] | None) -> dict[int, list[float]]:
    """Map each requested time to the nearest node of ``times``: ``{node: [requested, ...]}``."""
    out: dict[int, list[float]] = {}
    for s in wanted or ():
        s = float(s)
        j = int(torch.argmin((times - s).abs()))
        out.setdefault(j, []).append(s)
    return out


def _finish(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise FloatingPointError(
            f"{what} produced non-finite values; the step is too large for the model's stiffness "
            "(use more steps, time_grid='quadratic' or 'edm', or a larger eps)"
        )
    return x


def _default_device(generator: torch.Generator | None, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


# --------------------------------------------------------------------------- public
@torch.no_grad()
def sample(
    model: Callable,
    sde: SDE,
    grid: Grid,
    n: int,
    channels: int = 1,
    sampler: str = "auto",
    steps: int = 200,
    eps: float = 1e-3,
    time_grid: str | torch.Tensor = "uniform",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    return_trajectory_at: Sequence[float] | None = None,
    x_init: torch.Tensor | None = None,
    denoise: bool = True,
    snr: float = 0.16,
    corrector_steps: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    return_info: bool = False,
):
    """Draw ``n`` functions on ``grid`` by reversing ``sde`` with the score model ``model``.

    Parameters
    ----------
    model : callable ``(x_t (B, C, *grid.shape), t (B,), grid) -> eta_hat``
    sde : SDE
    grid : Grid
    n, channels : int
    sampler : {"auto", "em", "pc", "ode", "ode_gauss", "ode_adaptive"}
        ``"auto"`` (default): :func:`default_sampler` of the model. ``"ode_gauss"`` needs a model with ``gaussian_statistics(grid)`` and ``residual(x, t, grid)``
        (a :class:`~fsdiff.models.SpectralPreconditioner`).
    steps : int
        Steps of the time grid (ignored by ``"ode_adaptive"``).
    eps : float
        Final time, ``0 < eps < T``.
    time_grid : {"uniform", "quadratic", "edm"} or a decreasing tensor of times (then ``steps``
        and ``eps`` are taken from it)
    generator : torch.Generator, optional
        The only random source (see module notes on seeds and chunking).
    chunk_size : int, optional
        Evaluate the model on micro-batches of this size; identical results.
    progress : bool
        tqdm progress bar (off by default in the library).
    return_trajectory_at : sequence of float, optional
        Also return ``{time: state}`` (``(n, C, *grid.shape)``) at the time-grid node nearest
        to each requested time (``"ode_adaptive"``: exactly at it). Keys are the requested times.
    x_init : tensor ``(n, C, *grid.shape)``, optional
        Start state at ``T`` instead of a prior draw (the prior seed is still drawn, so the
        step noise is the same as without it).
    denoise : bool
        Final Tweedie step at ``eps`` (``"ode_gauss"``: the exact Gaussian flow from ``eps`` to 0).
    snr, corrector_steps : Langevin corrector of ``"pc"`` (see module notes).
    rtol, atol : tolerances of ``"ode_adaptive"``.
    rho : exponent of the ``"edm"`` time grid.
    dtype, device : of the state (the model sees ``x_t`` and ``t`` in ``dtype``).
    return_info : bool
        Return ``(x, info)`` with ``info = {"sampler", "nfe", "times", "trajectory"}`` (``sampler``: the
        scheme that ran, ``"auto"`` resolved).

    Returns
    -------
    ``x`` of shape ``(n, channels, *grid.shape)``; ``(x, trajectory)`` if
    ``return_trajectory_at`` is given; ``(x, info)`` if ``return_info``.
    """
    sampler = resolve_sampler(sampler, model)
    _check_common(sde, grid, n, channels, sampler, chunk_size, snr, corrector_steps)
    if sampler == "ode_gauss" and not (hasattr(model, "gaussian_statistics") and hasattr(model, "residual")):
        raise ValueError(f"sampler 'ode_gauss' needs a model with a Gaussian part (gaussian_statistics and residual, "
                         f"e.g. fsdiff.SpectralPreconditioner); got {type(model).__name__}: use sampler='ode'")
    device = _default_device(generator, device)
    eps = float(eps)
    if not (math.isfinite(eps) and 0 < eps < sde.T):
        raise ValueError(f"eps must lie in (0, T={sde.T}); got {eps}")
    if sampler == "ode_adaptive":
        times = torch.tensor([float(sde.T), eps], dtype=torch.float64)
        nsteps = 0
    else:
        times = time_steps(sde, None if isinstance(time_grid, torch.Tensor) else steps, eps, time_grid, rho)
        nsteps = times.numel() - 1
        eps = float(times[-1])
    k = _draws_per_step(sampler, corrector_steps)
    seeds = _seeds(generator, 1 + nsteps * k)
    step_seeds = [seeds[1 + i * k: 1 + (i + 1) * k] for i in range(nsteps)]
    if x_init is None:
        x = float(sde.std(times[0])) * sde.covariance.sample(grid, n, channels, generator=_gen(seeds[0], device), dtype=dtype, device=device)
    else:
        grid.check(x_init, "x_init", min_leading=2)
        if tuple(x_init.shape) != (n, channels, *grid.shape):
            raise ValueError(f"x_init has shape {tuple(x_init.shape)}; expected {(n, channels, *grid.shape)}")
        x = x_init.to(device=device, dtype=dtype).clone()
    traj: dict = {}
    pbar = tqdm(total=nsteps if nsteps else None, desc=f"{sampler} {grid.shape}", disable=not progress, leave=False)
    run = _Run(model, sde, n, channels, chunk_size, dtype, device, snr, corrector_steps, rtol, atol, pbar)
    try:
        if sampler == "ode_adaptive":
            if return_trajectory_at is not None and any(float(s) >= float(times[0]) for s in return_trajectory_at):
                traj.update({float(s): x.clone() for s in return_trajectory_at if float(s) >= float(times[0])})
            x = run.run_adaptive(x, float(times[0]), eps, grid, return_trajectory_at or (), traj)
            if return_trajectory_at is not None:
                for s in return_trajectory_at:
                    traj.setdefault(float(s), x.clone())  # times at or below eps
        else:
            record = _record_nodes(times, return_trajectory_at)
            for key in record.get(0, ()):
                traj[key] = x.clone()
            if sampler == "ode_gauss":
                x = run.run_gauss(x, times, grid, record, traj, denoise, from_prior=x_init is None)
            else:
                x = run.run_fixed(sampler, x, times, 0, nsteps, grid, step_seeds, record, traj)
        if denoise and sampler != "ode_gauss":
            x = eta_to_x0(x, run.eta(x, eps, grid), eps, sde)
    finally:
        pbar.close()
    x = _finish(x, f"sampler {sampler!r} on {grid!r}")
    if return_info:
        return x, {"sampler": sampler, "nfe": run.nfe, "times": times, "trajectory": traj}
    if return_trajectory_at is not None:
        return x, traj
    return x


def _new_mode_noise(sde: SDE, coarse: Grid, fine: Grid, t: float, n: int, channels: int, seed: int,
                    data_covariance: Covariance | None, data_mean, dtype, device) -> torch.Tensor:
    """A draw on ``fine`` supported on the modes ``coarse`` lacks, with the forward marginal there."""
    m, s = float(sde.mean_scale(t)), float(sde.std(t))
    cov: Covariance = sde.covariance * (s * s)
    if data_covariance is not None and m > 0:
        cov = cov + data_covariance * (m * m)
    z = cov.sample(fine, n, channels, generator=_gen(seed, device), dtype=torch.float64, device=device)
    if data_mean is not None:
        mu = data_mean(fine)
        if mu is not None:
            mu = torch.as_tensor(mu, dtype=torch.float64, device=device)
            fine.check(mu, "data_mean(grid)", min_leading=0)
            z = z + m * mu.reshape((1,) * (z.ndim - mu.ndim) + tuple(mu.shape))
    z = z - resample(resample(z, fine, coarse), coarse, fine)
    return z.to(dtype)


@torch.no_grad()
def sample_coarse_to_fine(
    model: Callable,
    sde: SDE,
    grids: Sequence[Grid],
    switch_times: Sequence[float],
    n: int,
    channels: int = 1,
    sampler: str = "auto",
    steps: int = 200,
    eps: float = 1e-3,
    time_grid: str | torch.Tensor = "uniform",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    denoise: bool = True,
    data_covariance: Covariance | None = None,
    data_mean: Callable[[Grid], torch.Tensor | None] | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    return_info: bool = False,
):
    """Reverse dynamics on a hierarchy of grids, refining at ``switch_times``.

    Runs ``sampler`` on ``grids[0]`` from ``T`` to ``switch_times[0]``, prolongs by Fourier
    zero-padding to ``grids[1]`` and adds independent noise on the new modes, and so on; the
    last level runs to ``eps``. The time grid is the one :func:`sample` would use with the same
    ``steps`` (equal step count); each switch time is moved to its nearest node (reported
    in ``info["switch_times"]``). Random draws are shared with :func:`sample` under the same
    generator state, plus one extra seed per switch.

    New modes
    ---------
    A mode ``k`` the coarse grid lacks has, under the forward process at time t, the
    marginal ``N(m mu_k, m² c_k + s² q_k)`` (``c_k`` the data's variance there): the SDE is
    diagonal in Fourier, so ``X_t``'s mode k is ``m X_0,k + s eta_k`` whatever the other
    modes do. It is exactly independent of the coarse modes for Gaussian data with a
    spectral covariance, and approximately whenever the data's fine-mode content is weakly
    correlated with its coarse content. The injected noise therefore has

    * ``data_covariance=None`` (default): variance ``s(t)² q_k`` — the forward noise alone;
      right when ``m² c_k << s² q_k`` beyond the coarse grid, i.e. at switch times where the
      fine modes are noise dominated (a trained model knows no ``C``);
    * ``data_covariance=C``: variance ``m² c_k + s² q_k`` (exact for Gaussian data;
      ``data_mean(grid)`` adds the mean ``m mu_k`` on the new modes).

    Parameters are those of :func:`sample`, plus ``grids`` (strictly finer, same domain and
    dimension), ``switch_times`` (``len(grids) - 1`` times, decreasing, inside ``(eps, T)``).
    ``"ode_adaptive"`` switches exactly at the given times; ``"auto"`` is ``"ode"`` (``"ode_gauss"``'s
    coordinates belong to one grid). Returns ``x`` on ``grids[-1]``, or ``(x, info)`` with
    ``info = {"sampler", "nfe", "times", "switch_times", "nfe_per_level"}``.
    """
    sampler = "ode" if sampler == "auto" else sampler
    grids = list(grids)
    if len(grids) < 1:
        raise ValueError("grids must hold at least one Grid")
    for g in grids:
        _check_common(sde, g, n, channels, sampler, chunk_size, snr, corrector_steps)
    for a, b in zip(grids[:-1], grids[1:]):
        if a.ndim != b.ndim or a.length != b.length:
            raise ValueError(f"grids must share dimension and domain; got {a!r} and {b!r}")
        if not all(mb >= ma for ma, mb in zip(a.max_modes, b.max_modes)) or a.max_modes == b.max_modes:
            raise ValueError(f"grids must get strictly finer; got {a!r} then {b!r}")
    switch = [float(s) for s in switch_times]
    if len(switch) != len(grids) - 1:
        raise ValueError(f"need len(grids) - 1 = {len(grids) - 1} switch times; got {len(switch)}")
    eps = float(eps)
    if not (math.isfinite(eps) and 0 < eps < sde.T):
        raise ValueError(f"eps must lie in (0, T={sde.T}); got {eps}")
    if any(not (eps < s < sde.T) for s in switch) or any(b >= a for a, b in zip(switch[:-1], switch[1:])):
        raise ValueError(f"switch_times must be strictly decreasing inside (eps={eps}, T={sde.T}); got {switch}")
    if sampler == "ode_gauss":
        raise ValueError("sample_coarse_to_fine does not support sampler 'ode_gauss' (its coordinates are per grid); "
                         "use 'ode', or sample() with 'ode_gauss' on the fine grid directly")
    device = _default_device(generator, device)
    if sampler == "ode_adaptive":
        times = torch.tensor([float(sde.T)] + switch + [eps], dtype=torch.float64)
        nodes = list(range(len(times)))
        nsteps = 0
    else:
        times = time_steps(sde, None if isinstance(time_grid, torch.Tensor) else steps, eps, time_grid, rho)
        nsteps = times.numel() - 1
        eps = float(times[-1])
        nodes = [0] + [int(torch.argmin((times - s).abs())) for s in switch] + [nsteps]
        if any(b <= a for a, b in zip(nodes[:-1], nodes[1:])):
            raise ValueError(f"switch times {switch} do not fall on distinct interior nodes of the {nsteps}-step time grid")
    k = _draws_per_step(sampler, corrector_steps)
    seeds = _seeds(generator, 1 + nsteps * k)
    step_seeds = [seeds[1 + i * k: 1 + (i + 1) * k] for i in range(nsteps)]
    switch_seeds = _seeds(generator, len(switch))
    x = float(sde.std(times[0])) * sde.covariance.sample(grids[0], n, channels, generator=_gen(seeds[0], device), dtype=dtype, device=device)
    pbar = tqdm(total=nsteps if nsteps else None, desc=f"{sampler} c2f", disable=not progress, leave=False)
    run = _Run(model, sde, n, channels, chunk_size, dtype, device, snr, corrector_steps, rtol, atol, pbar)
    nfe_levels = []
    try:
        for lvl, g in enumerate(grids):
            before = run.nfe
            if lvl > 0:
                t_sw = float(times[nodes[lvl]])
                x = resample(x, grids[lvl - 1], g) + _new_mode_noise(
                    sde, grids[lvl - 1], g, t_sw, n, channels, switch_seeds[lvl - 1], data_covariance, data_mean, dtype, device)
            if sampler == "ode_adaptive":
                x = run.run_adaptive(x, float(times[lvl]), float(times[lvl + 1]), g, (), {})
            else:
                x = run.run_fixed(sampler, x, times, nodes[lvl], nodes[lvl + 1], g, step_seeds, {}, {})
            nfe_levels.append(run.nfe - before)
        if denoise:
            x = eta_to_x0(x, run.eta(x, eps, grids[-1]), eps, sde)
            nfe_levels[-1] += 1
    finally:
        pbar.close()
    x = _finish(x, f"coarse-to-fine sampler {sampler!r}")
    if return_info:
        return x, {"sampler": sampler, "nfe": run.nfe, "times": times, "switch_times": [float(times[j]) for j in nodes[1:-1]],
                   "nfe_per_level": nfe_levels}
    return x
