"""Resolution hierarchies and multilevel training schedules.

A hierarchy is a list of grids of one domain, coarse to fine (e.g. 16², 32², 64²). Data on a
level is the Fourier restriction (:func:`fsdiff.resample`) of finest-level data, or, for
synthetic nested data sets, a draw made directly on the level's grid (the same thing in law,
and cheaper). Noise is nested (:meth:`fsdiff.Covariance.sample`), so the restriction of
level-l noise *is* level-(l-1) noise.

Schedules (:class:`MultilevelSchedule`), i.e. what one optimiser step looks at:

* ``single``: one level (default the finest) every step;
* ``coarse_to_fine``: the first ``fractions[0]`` of the steps on level 0, then level 1, ...;
* ``random``: level ``l`` with probability ``probabilities[l]``, drawn per step from a generator;
* ``mlmc``: a multilevel Monte Carlo estimate of the *finest-level* loss (and so of its
  gradient)::

      L_L = E[L_0] + sum_{l=1}^{L} E[L_l - L_{l-1}]

  every term estimated with its own samples (``samples[l]`` of them, fewer on finer levels),
  and each difference *coupled*: ``L_l`` and ``L_{l-1}`` are evaluated on the SAME ``x_0``,
  time and noise, restricted from level l to level l-1. The estimate is unbiased for the
  finest-level loss whenever restricted level-l data has the level-(l-1) law (true by
  construction) and nested noise restricts to noise (true for spectral covariances).

One step of any schedule is a list of :class:`LossTerm`; the step's loss is the sum over
terms of the term's mean per-sample value (:func:`term_loss`), which the trainer evaluates
in micro-batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .._seeds import NOISE, derived
from ..grid import Grid, resample
from ..losses import dsm_loss, sample_time
from ..sde import SDE

__all__ = [
    "SCHEDULES",
    "hierarchy",
    "MultilevelSchedule",
    "LossTerm",
    "draw_level_data",
    "draw_terms",
    "term_loss",
    "mlmc_loss",
    "ValidationSet",
]

SCHEDULES = ("single", "coarse_to_fine", "random", "mlmc")


def hierarchy(grid: Grid, levels: Sequence[int] | None = None) -> list[Grid]:
    """Grids of ``grid``'s domain with ``levels[i]`` points per axis, coarse to fine.

    ``levels`` must be strictly increasing, and its last entry must equal the (square)
    ``grid``'s points per axis. ``None`` means the single level ``grid``.
    """
    if levels is None:
        return [grid]
    levels = [int(n) for n in levels]
    if not levels or any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"multilevel.levels must be a non-empty, strictly increasing list; got {levels}")
    if len(set(grid.shape)) != 1 or levels[-1] != grid.shape[0]:
        raise ValueError(f"multilevel.levels must end at the finest grid's points per axis {grid.shape}; got {levels}")
    if levels[0] < 4:
        raise ValueError(f"multilevel.levels: the coarsest level needs at least 4 points per axis; got {levels[0]}")
    return [grid.with_shape(n) for n in levels]


@dataclass
class LossTerm:
    """A batch for one term of a step's loss, on level ``level``.

    ``x0``, ``eta``: ``(n, C, *grids[level].shape)``; ``t``: ``(n,)``. If ``coupled``, the
    per-sample value is ``l_level - l_{level-1}``, the second evaluated on the restrictions.
    """

    level: int
    x0: torch.Tensor
    t: torch.Tensor
    eta: torch.Tensor
    coupled: bool = False

    @property
    def n(self) -> int:
        return int(self.x0.shape[0])


class MultilevelSchedule:
    """Which level(s) each optimiser step trains on (see the module docstring).

    Parameters
    ----------
    grids : list of Grid, coarse to fine (see :func:`hierarchy`).
    kind : one of ``SCHEDULES``.
    fractions : ``coarse_to_fine``: fraction of the steps per level (normalised to sum 1).
    probabilities : ``random``: level probabilities (normalised to sum 1).
    samples : ``mlmc``: samples per level, coarse to fine (default: see :meth:`mlmc_samples`).
    level : ``single``: which level (index, default -1 = finest).
    """

    def __init__(
        self, grids: Sequence[Grid], kind: str = "single", fractions: Sequence[float] | None = None,
        probabilities: Sequence[float] | None = None, samples: Sequence[int] | None = None, level: int = -1,
    ):
        self.grids = list(grids)
        L = len(self.grids)
        if L < 1:
            raise ValueError("a multilevel schedule needs at least one grid")
        if kind not in SCHEDULES:
            raise ValueError(f"multilevel.schedule must be one of {SCHEDULES}; got {kind!r}")
        self.kind = kind
        self.single_level = int(level) % L if -L <= int(level) < L else None
        if self.single_level is None:
            raise ValueError(f"multilevel.level {level} is out of range for {L} levels")

        def weights(name: str, w: Sequence[float] | None) -> list[float]:
            if w is None:
                return [1.0 / L] * L
            w = [float(v) for v in w]
            if len(w) != L or any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
                raise ValueError(f"multilevel.{name} must be {L} non-negative numbers with a positive sum; got {w}")
            s = sum(w)
            return [v / s for v in w]

        self.fractions = weights("fractions", fractions)
        self.probabilities = weights("probabilities", probabilities)
        if samples is not None:
            samples = [int(v) for v in samples]
            if len(samples) != L or any(v < 1 for v in samples):
                raise ValueError(f"multilevel.samples must be {L} positive integers (coarse to fine); got {samples}")
        self.samples = samples

    @property
    def n_levels(self) -> int:
        return len(self.grids)

    def mlmc_samples(self, batch_size: int) -> list[int]:
        """Samples per level for ``mlmc``: the configured list, else ``batch_size / 2**l`` from the coarsest down."""
        if self.samples is not None:
            return list(self.samples)
        return [max(1, batch_size // 2**l) for l in range(self.n_levels)]

    def level(self, step: int, total_steps: int, generator: torch.Generator | None = None) -> int:
        """The level of step ``step`` (0-based) of ``total_steps`` (not for ``mlmc``).

        ``random`` draws one ``torch.multinomial`` sample from ``generator``; the others draw nothing.
        """
        if self.kind == "single":
            return self.single_level
        if self.kind == "coarse_to_fine":
            edge = 0.0
            for l, f in enumerate(self.fractions):
                edge += f * total_steps
                if step < round(edge):
                    return l
            return self.n_levels - 1
        if self.kind == "random":
            p = torch.tensor(self.probabilities, dtype=torch.float64)
            return int(torch.multinomial(p, 1, generator=generator))
        raise ValueError("the mlmc schedule has no single level per step; use draw_terms")

    def to_dict(self) -> dict:
        return {"schedule": self.kind, "levels": [g.shape[0] for g in self.grids], "fractions": self.fractions,
                "probabilities": self.probabilities, "samples": self.samples, "level": self.single_level}

    def __repr__(self) -> str:
        return f"MultilevelSchedule({self.kind!r}, levels={[g.shape for g in self.grids]})"


def draw_level_data(dataset: Any, grids: Sequence[Grid], level: int, n: int, generator: torch.Generator | None,
                    restrict_from_finest: bool = False) -> torch.Tensor:
    """``n`` data samples on ``grids[level]``: drawn there, or drawn on the finest grid and Fourier-restricted."""
    if restrict_from_finest and level != len(grids) - 1:
        x = dataset.sample(grids[-1], n, generator=generator)
        return resample(x, grids[-1], grids[level])
    return dataset.sample(grids[level], n, generator=generator)


def _draw_term(dataset, sde: SDE, grids, level: int, n: int, gens: dict, *, coupled: bool, time_sampling: str,
               eps: float, restrict_from_finest: bool) -> LossTerm:
    x0 = draw_level_data(dataset, grids, level, n, gens["data"], restrict_from_finest).float()
    t = sample_time(n, sde, gens["noise"], time_sampling, eps, device=x0.device)
    eta = sde.covariance.sample(grids[level], n, x0.shape[1], generator=gens["noise"], dtype=x0.dtype, device=x0.device)
    return LossTerm(level, x0, t, eta, coupled)


def draw_terms(schedule: MultilevelSchedule, step: int, total_steps: int, dataset, sde: SDE, batch_size: int,
               gens: dict, *, time_sampling: str = "uniform", eps: float = 1e-3,
               restrict_from_finest: bool = False, shards: Sequence[dict] | None = None,
               n_shards: int = 1) -> list[LossTerm]:
    """Draw everything random for one step: level choice (``gens["level"]``), data (``gens["data"]``),
    times and noise (``gens["noise"]``). The whole batch is drawn before any model call, so
    splitting it into micro-batches cannot change it.

    Data-parallel runs (:mod:`fsdiff.training.distributed`) draw each term as ``n_shards`` equal
    shards; ``shards`` holds the ``{"data", "noise"}`` generators of the shards this process draws
    (default: ``[gens]``, the one shard), and the terms hold their rows, concatenated in order.
    """
    kw = dict(time_sampling=time_sampling, eps=eps, restrict_from_finest=restrict_from_finest)
    grids = schedule.grids
    shards = [gens] if shards is None else list(shards)
    if schedule.kind != "mlmc":
        plan = [(schedule.level(step, total_steps, gens.get("level")), batch_size, False)]
    else:
        plan = [(l, n, l > 0) for l, n in enumerate(schedule.mlmc_samples(batch_size))]
    terms = []
    for level, n, coupled in plan:
        if n % n_shards:
            raise ValueError(f"{n} samples on level {level} cannot be split into {n_shards} equal data shards; "
                             "make training.batch_size (and multilevel.samples) multiples of training.data_shards")
        parts = [_draw_term(dataset, sde, grids, level, n // n_shards, g, coupled=coupled, **kw) for g in shards]
        if len(parts) == 1:
            terms.append(parts[0])
        else:
            terms.append(LossTerm(level, *(torch.cat([getattr(p, k) for p in parts]) for k in ("x0", "t", "eta")),
                                  coupled))
    return terms


def term_loss(model: Callable, term: LossTerm, grids: Sequence[Grid], sde: SDE, weighting: str = "none",
              index: slice | None = None) -> torch.Tensor:
    """Per-sample value of ``term`` (optionally on the rows ``index``): ``(n,)``.

    Plain term: the DSM loss on ``grids[term.level]``. Coupled term: that minus the DSM loss
    of the same ``x0``, ``t``, ``eta`` restricted to ``grids[term.level - 1]``.
    """
    sl = index if index is not None else slice(None)
    x0, t, eta = term.x0[sl], term.t[sl], term.eta[sl]
    fine = grids[term.level]
    val = dsm_loss(model, x0, sde, fine, t=t, eta=eta, weighting=weighting)
    if term.coupled:
        coarse = grids[term.level - 1]
        val = val - dsm_loss(model, resample(x0, fine, coarse), sde, coarse, t=t,
                             eta=resample(eta, fine, coarse), weighting=weighting)
    return val


def mlmc_loss(model: Callable, dataset, sde: SDE, grids: Sequence[Grid], samples: Sequence[int], gens: dict,
              weighting: str = "none", time_sampling: str = "uniform", eps: float = 1e-3,
              restrict_from_finest: bool = False) -> torch.Tensor:
    """One multilevel Monte Carlo estimate of the finest-level expected DSM loss (a scalar; differentiable).

    ``mean_0(l_0) + sum_{l>=1} mean_l(l_l - l_{l-1})`` with ``samples[l]`` coupled samples on level l.
    """
    sched = MultilevelSchedule(grids, "mlmc", samples=samples)
    terms = draw_terms(sched, 0, 1, dataset, sde, 0, gens, time_sampling=time_sampling, eps=eps,
                       restrict_from_finest=restrict_from_finest)
    return sum(term_loss(model, tm, grids, sde, weighting).mean() for tm in terms)


class ValidationSet:
    """A fixed validation batch seen at every level: data, times and noise drawn once on the finest
    grid from seeded generators and Fourier-restricted, so losses are comparable across evaluations
    and across levels.
    """

    def __init__(self, dataset, grids: Sequence[Grid], sde: SDE, n: int, seed: int = 12345,
                 time_sampling: str = "uniform", eps: float = 1e-3):
        self.grids = list(grids)
        g_data = torch.Generator().manual_seed(int(seed))
        g_noise = derived(seed, NOISE)
        fine = self.grids[-1]
        x0 = dataset.sample(fine, n, generator=g_data).float()
        self.t = sample_time(n, sde, g_noise, time_sampling, eps)
        eta = sde.covariance.sample(fine, n, x0.shape[1], generator=g_noise, dtype=x0.dtype)
        self.data = [(resample(x0, fine, g), resample(eta, fine, g)) for g in self.grids]
        self.sde = sde

    @torch.no_grad()
    def losses(self, model: Callable, weighting: str = "none", chunk: int = 32) -> list[float]:
        """Mean DSM loss per level (coarse to fine)."""
        out = []
        params = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        dev = params.device if params is not None else torch.device("cpu")
        t = self.t.to(dev)
        for g, (x0, eta) in zip(self.grids, self.data):
            x0, eta = x0.to(dev), eta.to(dev)
            vals = [dsm_loss(model, x0[i:i + chunk], self.sde, g, t=t[i:i + chunk], eta=eta[i:i + chunk],
                             weighting=weighting) for i in range(0, x0.shape[0], chunk)]
            out.append(float(torch.cat(vals).double().mean()))
        return out
