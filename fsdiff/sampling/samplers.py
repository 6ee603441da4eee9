"""``sample`` and ``sample_coarse_to_fine``: the public samplers (described in :mod:`fsdiff.sampling`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .._checks import check_finite, check_float_dtype, check_generator
from ..covariance import Covariance
from ..grid import Grid, resample
from ..parametrization import eta_to_x0
from ..sde import SDE
from .randomness import draw_seeds, seeded
from .schemes import Run
from .timesteps import time_steps

__all__ = ["sample", "sample_coarse_to_fine", "SamplingOptions", "SAMPLERS", "SAMPLER_CHOICES", "default_sampler",
           "resolve_sampler"]

SAMPLERS = ("em", "pc", "ode", "ode_gauss", "ode_adaptive")
#: what ``sampler=`` accepts: a scheme of :data:`SAMPLERS`, or ``"auto"`` (:func:`default_sampler`)
SAMPLER_CHOICES = ("auto",) + SAMPLERS


@dataclass(frozen=True)
class SamplingOptions:
    """The keyword options every sampler shares; :func:`sample` documents each one.

    :func:`sample_coarse_to_fine` takes them as ``**options`` (an unknown name is a ``TypeError``).
    """

    channels: int = 1
    sampler: str = "auto"
    steps: int = 200
    eps: float = 1e-3
    time_grid: str | torch.Tensor = "uniform"
    generator: torch.Generator | None = None
    chunk_size: int | None = None
    progress: bool = False
    denoise: bool = True
    snr: float = 0.16
    corrector_steps: int = 1
    rtol: float = 1e-5
    atol: float = 1e-5
    rho: float = 7.0
    dtype: torch.dtype = torch.float32
    device: torch.device | str | None = None
    return_info: bool = False


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
            f"{what} produced non-finite values while the model's outputs stayed finite: the step is too large "
            "for the model's stiffness (use more steps, time_grid='quadratic' or 'edm', or a larger eps)"
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
        Record ``{time: state}`` (``(n, C, *grid.shape)``) in ``info["trajectory"]`` at the time-grid
        node nearest to each requested time (``"ode_adaptive"``: exactly at it). Keys are the
        requested times. Needs ``return_info=True``.
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
    ``x`` of shape ``(n, channels, *grid.shape)``, or ``(x, info)`` if ``return_info``.
    """
    if return_trajectory_at is not None and not return_info:
        raise ValueError("return_trajectory_at fills info['trajectory']: pass return_info=True as well")
    sampler = resolve_sampler(sampler, model)
    _check_common(sde, grid, n, channels, sampler, chunk_size, snr, corrector_steps)
    check_float_dtype(dtype)
    check_generator(generator)
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
    seeds = draw_seeds(generator, 1 + nsteps * k)
    step_seeds = [seeds[1 + i * k: 1 + (i + 1) * k] for i in range(nsteps)]
    if x_init is None:
        x = float(sde.std(times[0])) * sde.covariance.sample(grid, n, channels, generator=seeded(seeds[0], device), dtype=dtype, device=device)
    else:
        grid.check(x_init, "x_init", min_leading=2)
        check_finite(x_init, "x_init")
        if tuple(x_init.shape) != (n, channels, *grid.shape):
            raise ValueError(f"x_init has shape {tuple(x_init.shape)}; expected {(n, channels, *grid.shape)}")
        x = x_init.to(device=device, dtype=dtype).clone()
    traj: dict = {}
    pbar = tqdm(total=nsteps if nsteps else None, desc=f"{sampler} {grid.shape}", disable=not progress, leave=False)
    run = Run(model, sde, n, channels, chunk_size, dtype, device, snr, corrector_steps, rtol, atol, pbar)
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
    return x


def _new_mode_noise(sde: SDE, coarse: Grid, fine: Grid, t: float, n: int, channels: int, seed: int,
                    data_covariance: Covariance | None, data_mean, dtype, device) -> torch.Tensor:
    """A draw on ``fine`` supported on the modes ``coarse`` lacks, with the forward marginal there."""
    m, s = float(sde.mean_scale(t)), float(sde.std(t))
    cov: Covariance = sde.covariance * (s * s)
    if data_covariance is not None and m > 0:
        cov = cov + data_covariance * (m * m)
    z = cov.sample(fine, n, channels, generator=seeded(seed, device), dtype=torch.float64, device=device)
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
    *,
    data_covariance: Covariance | None = None,
    data_mean: Callable[[Grid], torch.Tensor | None] | None = None,
    **options,
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

    ``options`` are the keyword arguments of :func:`sample` (:class:`SamplingOptions`: ``channels``,
    ``sampler``, ``steps``, ``eps``, ``time_grid``, ``generator``, ``chunk_size``, ``progress``,
    ``denoise``, ``snr``, ``corrector_steps``, ``rtol``, ``atol``, ``rho``, ``dtype``, ``device``,
    ``return_info``); ``grids`` are strictly finer, same domain and dimension; ``switch_times`` are
    ``len(grids) - 1`` times, decreasing, inside ``(eps, T)``.
    ``"ode_adaptive"`` switches exactly at the given times; ``"auto"`` is ``"ode"`` (``"ode_gauss"``'s
    coordinates belong to one grid). Returns ``x`` on ``grids[-1]``, or ``(x, info)`` with
    ``info = {"sampler", "nfe", "times", "switch_times", "nfe_per_level"}``.
    """
    opts = SamplingOptions(**options)
    channels, steps, eps, time_grid, generator = opts.channels, opts.steps, opts.eps, opts.time_grid, opts.generator
    chunk_size, progress, denoise, snr, corrector_steps = opts.chunk_size, opts.progress, opts.denoise, opts.snr, opts.corrector_steps
    rtol, atol, rho, dtype, device, return_info = opts.rtol, opts.atol, opts.rho, opts.dtype, opts.device, opts.return_info
    sampler = "ode" if opts.sampler == "auto" else opts.sampler
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
    seeds = draw_seeds(generator, 1 + nsteps * k)
    step_seeds = [seeds[1 + i * k: 1 + (i + 1) * k] for i in range(nsteps)]
    switch_seeds = draw_seeds(generator, len(switch))
    x = float(sde.std(times[0])) * sde.covariance.sample(grids[0], n, channels, generator=seeded(seeds[0], device), dtype=dtype, device=device)
    pbar = tqdm(total=nsteps if nsteps else None, desc=f"{sampler} c2f", disable=not progress, leave=False)
    run = Run(model, sde, n, channels, chunk_size, dtype, device, snr, corrector_steps, rtol, atol, pbar)
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
