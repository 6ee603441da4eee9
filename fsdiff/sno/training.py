"""Conditional denoising score matching for the Score Neural Operator, and its point-space helpers.

Conditional DSM over a family: every batch element ``b`` has its own distribution ``nu_b``,
its own encoding ``u_b`` (an exact or empirical kernel mean embedding from its own sample set)
and its own points ``x_0 ~ nu_b`` with their own times, and the loss is

    E_b E_{t, x_0, z} || eta_theta(m(t) x_0 + s(t) z, t; u_b) - z ||²,

whose minimiser is ``eta* = -s(t) grad log p_t^{nu}`` (given the encoding). Unconditional and
per-distribution baselines use the same loop with ``encoder="none"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..grid import Grid
from ..points import PointScore, sample_points
from ..sde import SDE
from ..training.fit import fit
from .base_score import KMEBaseScore
from .embedding import KernelMeanEmbedding
from .model import ScoreNeuralOperator

__all__ = [
    "SNOTrainConfig", "draw_times", "sno_dsm_loss", "train_sno", "train_point_model", "sno_point_score",
    "relative_score_error", "draw_encodings", "generate",
]


@dataclass(frozen=True)
class SNOTrainConfig:
    """Training settings.

    Parameters
    ----------
    steps, lr
        Adam steps and peak learning rate (cosine decay to 5% over ``steps``).
    batch_dists
        distributions per batch (SNO).
    points_per_dist
        points per distribution.
    n_range
        empirical embeddings use ``n`` log-uniform in ``[n_lo, n_hi]`` samples ...
    exact_fraction
        ... except this share of batch elements, which get the exact embedding.
    eps
        smallest training time.
    t_power
        training times ``t = eps + (T - eps) u^t_power``, ``u ~ U(0, 1)`` (1: uniform; 2 puts
        more points at small t, where scores are sharp and errors largest).
    ema_decay
        exponential moving average of the weights (0 disables).
    grad_clip
        max gradient norm.
    bank_per_dist
        if > 0, empirical embeddings are drawn once per training distribution
        (this many each, plus the exact one) and reused; 0 draws fresh sample sets every step.
    t_density
        ``"power"`` (the ``t_power`` rule above) or ``"log_mix"``: half the points at
        ``t`` log-uniform in ``[eps, T]``, half uniform. Scores are sharpest and the relative error
        largest at small ``t`` (``|eta*|`` shrinks like ``s(t) / data std`` there), and a
        log-uniform share puts ~45% of the points at ``t < 0.2`` instead of 20%.
    exact_warmup
        curriculum for empirical encodings: for this share of the steps every batch
        element gets the exact embedding; afterwards ``exact_fraction`` applies.
    """

    steps: int = 2000
    lr: float = 5e-3
    batch_dists: int = 16
    points_per_dist: int = 256
    n_range: tuple[int, int] = (1, 1024)
    exact_fraction: float = 0.5
    eps: float = 1e-3
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    bank_per_dist: int = 8
    t_power: float = 1.0
    t_density: str = "power"
    exact_warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_dists < 1 or self.points_per_dist < 1 or self.lr <= 0:
            raise ValueError(f"steps, batch_dists, points_per_dist and lr must be positive; got {self}")
        if not 1 <= self.n_range[0] <= self.n_range[1]:
            raise ValueError(f"n_range must satisfy 1 <= lo <= hi; got {self.n_range}")
        if not 0 <= self.exact_fraction <= 1 or not 0 <= self.ema_decay < 1 or not 0 <= self.exact_warmup <= 1:
            raise ValueError("exact_fraction and exact_warmup must lie in [0, 1] and ema_decay in [0, 1)")
        if self.t_density not in ("power", "log_mix"):
            raise ValueError(f"t_density must be 'power' or 'log_mix'; got {self.t_density!r}")


def draw_times(shape: tuple[int, ...], T: float, eps: float, generator: torch.Generator | None = None,
               t_power: float = 1.0, density: str = "power") -> torch.Tensor:
    """Training times in ``[eps, T]`` (float64, ``shape``) by the rule of :class:`SNOTrainConfig`."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    if density == "power":
        return eps + (T - eps) * u ** t_power
    log_t = math.log(eps) + (math.log(T) - math.log(eps)) * u
    uniform = eps + (T - eps) * torch.rand(shape, generator=generator, dtype=torch.float64)
    pick_log = torch.rand(shape, generator=generator) < 0.5
    return torch.where(pick_log, log_t.exp(), uniform)


def sno_dsm_loss(model: ScoreNeuralOperator, x0: torch.Tensor, sde: SDE, code: torch.Tensor,
                 eps: float = 1e-3, generator: torch.Generator | None = None, t_power: float = 1.0,
                 t_density: str = "power", base: KMEBaseScore | None = None) -> torch.Tensor:
    """Per-distribution DSM loss: ``x0 (B, P, d)``, ``code (B, c)`` -> ``(B,)`` (mean over points of ``|eta_hat - z|²``).

    A hybrid model needs ``base``, the closed form of the same ``B`` encodings (``model.make_base``).
    """
    B, P, d = x0.shape
    t = draw_times((B, P), sde.T, eps, generator, t_power, t_density)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    m, s = sde.mean_scale(t).to(x0.dtype), sde.std(t).to(x0.dtype)
    xt = m[..., None] * x0 + s[..., None] * z
    eta = model.decode(code, xt, t.to(x0.dtype), _base_eta(model, base, xt, t, sde))
    return (eta - z).square().sum(-1).mean(-1)


def _base_eta(model: ScoreNeuralOperator, base: KMEBaseScore | None, x: torch.Tensor, t: torch.Tensor,
              sde: SDE) -> torch.Tensor | None:
    """The faded closed-form prediction a hybrid model's decoder takes (None for other models)."""
    if model.base is None:
        if base is not None:
            raise ValueError("a base score was given but the model is not a hybrid (base=None)")
        return None
    if base is None:
        raise ValueError("a hybrid SNO needs its base score: pass base=model.make_base(u, kme)")
    return base.eta(x, t, sde, tuple(model.base["t_fade"]))


def draw_encodings(mixtures, kme: KernelMeanEmbedding, n_range: tuple[int, int], exact_fraction: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[int]]:
    """One encoding per mixture of a batch: exact (``n = 0`` in the returned list) or empirical from ``n`` samples.

    ``n`` is log-uniform in ``n_range``. Returns ``(B, 1, *kme.grid.shape)`` and the ``n`` used.
    """
    B = mixtures.batch_size
    out = torch.empty(B, 1, *kme.grid.shape)
    ns: list[int] = []
    exact = torch.rand(B, generator=generator) < exact_fraction
    lo, hi = math.log(n_range[0]), math.log(n_range[1] + 1)
    logs = lo + (hi - lo) * torch.rand(B, generator=generator, dtype=torch.float64)
    if exact.any():
        idx = exact.nonzero()[:, 0]
        out[idx] = kme.exact_gmm(mixtures[idx])
    for b in range(B):
        if exact[b]:
            ns.append(0)
            continue
        n = min(n_range[1], max(n_range[0], int(math.exp(float(logs[b])))))
        out[b] = kme.empirical(mixtures[b].sample(n, generator))
        ns.append(n)
    return out, ns


def _fit(model: nn.Module, loss_of_step: Callable[[int], torch.Tensor], cfg: SNOTrainConfig, name: str,
         log: Callable[[str], None] | None, log_every: int) -> tuple[nn.Module, list[float]]:
    """:func:`fsdiff.training.fit` with the SNO recipe (cosine to 5%, clipping, EMA); ``(ema or model, losses)``."""
    model.train()
    result = fit(model.parameters(), loss_of_step, cfg.steps, cfg.lr, final_lr_ratio=0.05, grad_clip=cfg.grad_clip,
                 ema_of=model if cfg.ema_decay > 0 else None, ema_decay=cfg.ema_decay, name=name,
                 log=log, log_every=log_every)
    model.eval()
    return (result.ema.module if result.ema is not None else model), result.losses


def train_sno(model: ScoreNeuralOperator, family, kme: KernelMeanEmbedding, sde: SDE, cfg: SNOTrainConfig,
              generator: torch.Generator | None = None, combos=None,
              log: Callable[[str], None] | None = None, log_every: int = 500) -> tuple[nn.Module, list[float]]:
    """Conditional DSM over ``combos`` (default: ``family.train_combinations``).

    Returns ``(ema_model or model, loss history)``; ``model`` is trained in place.
    """
    if model.encoder_type != "fno":
        raise ValueError("train_sno trains an SNO with an 'fno' encoder of kernel mean embeddings")
    combos = family.train_combinations if combos is None else list(combos)
    bank = None
    allmix = family.mixtures(combos)
    if cfg.bank_per_dist > 0:
        exact = kme.exact_gmm(allmix)  # (D, 1, *S)
        emp = []
        for _ in range(cfg.bank_per_dist):
            emp.append(draw_encodings(allmix, kme, cfg.n_range, 0.0, generator)[0])
        bank = (exact, torch.stack(emp, 1))  # (D, 1, *S), (D, bank, 1, *S)

    def loss_of_step(step: int) -> torch.Tensor:
        pick = torch.randint(len(combos), (cfg.batch_dists,), generator=generator).tolist()
        mix = allmix[pick]
        share = 1.0 if step < cfg.exact_warmup * cfg.steps else cfg.exact_fraction
        if bank is None:
            u, _ = draw_encodings(mix, kme, cfg.n_range, share, generator)
        else:
            idx = torch.tensor(pick)
            use_exact = torch.rand(len(pick), generator=generator) < share
            j = torch.randint(cfg.bank_per_dist, (len(pick),), generator=generator)
            u = torch.where(use_exact.reshape(-1, 1, *[1] * kme.dim), bank[0][idx], bank[1][idx, j])
        x0 = mix.sample(cfg.points_per_dist, generator)
        base = model.make_base(u, kme) if model.base is not None else None
        return sno_dsm_loss(model, x0, sde, model.encode(u, kme.grid), cfg.eps, generator, cfg.t_power, cfg.t_density,
                            base)

    return _fit(model, loss_of_step, cfg, "sno", log, log_every)


def train_point_model(model: ScoreNeuralOperator, sampler: Callable[[int, torch.Generator | None], torch.Tensor],
                      sde: SDE, cfg: SNOTrainConfig, generator: torch.Generator | None = None,
                      log: Callable[[str], None] | None = None, log_every: int = 500,
                      name: str = "point") -> tuple[nn.Module, list[float]]:
    """DSM for an unconditional point model (``encoder="none"``); ``sampler(n, gen) -> x0 (n, d)``.

    A batch holds ``batch_dists * points_per_dist`` points, the same as an SNO batch.
    """
    if model.encoder_type != "none":
        raise ValueError("train_point_model trains an encoder='none' model")
    code = model.encode(None)
    n = cfg.batch_dists * cfg.points_per_dist

    def loss_of_step(step: int) -> torch.Tensor:
        return sno_dsm_loss(model, sampler(n, generator)[None], sde, code, cfg.eps, generator, cfg.t_power,
                            cfg.t_density)

    return _fit(model, loss_of_step, cfg, name, log, log_every)


def sno_point_score(model: ScoreNeuralOperator, sde: SDE, code: torch.Tensor | None = None,
                    u: torch.Tensor | None = None, grid: Grid | None = None,
                    kme: KernelMeanEmbedding | None = None) -> PointScore:
    """``score(x (n, d), t (n,)) = -eta_hat / s(t)`` for one distribution, given its code or its encoding ``u (1, ...)``.

    ``grid`` is the encoding's grid; ``kme`` (the embedding ``u`` was made with) may stand for it and is
    required by a hybrid model, whose base score reads ``u`` through it. The result plugs into
    :func:`fsdiff.points.sample_points`.
    """
    if kme is not None:
        if grid is not None and grid != kme.grid:
            raise ValueError(f"grid {grid!r} differs from the embedding's grid {kme.grid!r}")
        grid = kme.grid
    base = None
    if model.base is not None:
        if u is None or kme is None:
            raise ValueError("a hybrid SNO scores from its encoding: pass u and the KernelMeanEmbedding kme it was made with")
        base = model.make_base(u, kme)
    with torch.no_grad():
        code = model.encode(u, grid) if code is None else code
    if code.shape[0] != 1:
        raise ValueError(f"sno_point_score takes one distribution (code (1, c)); got {tuple(code.shape)}")

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tt = t.to(x.dtype)[None]
            eta = model.decode(code, x[None], tt, _base_eta(model, base, x[None], tt, sde))[0]
        return -eta / sde.std(t.to(torch.float64)).to(x.dtype)[:, None]

    return score


def relative_score_error(score: PointScore, mixture, sde: SDE, times: torch.Tensor, n: int = 2048,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Relative L² error ``sqrt(E|s_hat - s|² / E|s|²)`` under ``x ~ p_t``, for each ``t`` in ``times``: ``(len(times),)``."""
    out = []
    for t in times.tolist():
        x = mixture.sample_perturbed(n, t, sde, generator)
        tt = torch.full((n,), t)
        exact = mixture.score(x, tt.double(), sde)
        with torch.no_grad():
            est = score(x, tt)
        out.append(float(((est - exact).square().sum(-1).mean() / exact.square().sum(-1).mean()).sqrt()))
    return torch.tensor(out, dtype=torch.float64)


def generate(model: ScoreNeuralOperator, sde: SDE, n: int, code: torch.Tensor | None = None,
             u: torch.Tensor | None = None, grid: Grid | None = None, steps: int = 200, method: str = "em",
             generator: torch.Generator | None = None, kme: KernelMeanEmbedding | None = None) -> torch.Tensor:
    """Samples ``(n, dim)`` of the distribution encoded by ``u`` (or ``code``) via :func:`fsdiff.points.sample_points`."""
    score = sno_point_score(model, sde, code, u, grid, kme)
    return sample_points(score, sde, n, model.dim, steps=steps, method=method, generator=generator)
