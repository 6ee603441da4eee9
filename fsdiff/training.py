"""The training loop: AdamW, warm-up + cosine learning rate, EMA, clipping, accumulation, checkpoints.

Everything random in a step (level choice, data, times, noise) is drawn from three explicit
``torch.Generator`` objects (``level``, ``data``, ``noise``) whose states are saved in every
checkpoint, and the whole batch is drawn before the model sees it. Hence:

* micro-batching (``micro_batch_size``) changes the result only by float rounding;
* stopping, resuming from a checkpoint and continuing gives bit-identical parameters to an
  uninterrupted run.

A run directory holds ``checkpoints/step_XXXXXXXX.pt`` (plain data, see :mod:`fsdiff.io`),
``metrics.csv`` (one row per logged step), ``metrics.json`` (history, per-level samples and
wall-clock, final validation losses) and ``loss.png``. :func:`train_from_config` also writes
``config.toml``.
"""

from __future__ import annotations

import copy
import math
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .config import RunConfig, TrainingConfig, config_from_dict
from .grid import Grid
from .io import load_checkpoint, save_checkpoint, write_csv, write_json, write_toml
from .multilevel import MultilevelSchedule, ValidationSet, draw_terms, hierarchy, term_loss
from .sde import SDE, sde_from_dict

__all__ = [
    "TrainingDiverged",
    "EMA",
    "lr_at",
    "make_generators",
    "train",
    "train_from_config",
    "load_run",
    "latest_checkpoint",
    "plot_loss_curve",
    "export_run",
    "PRETRAINED_KIND",
]

#: ``ckpt["kind"]`` of files written by :func:`export_run`
PRETRAINED_KIND = "fsdiff-pretrained"

_CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


class TrainingDiverged(FloatingPointError):
    """The loss or gradient became non-finite; the message names the step and the last good checkpoint."""


# --------------------------------------------------------------------------- pieces
class EMA:
    """Exponential moving average of a model's parameters and buffers (a deep copy, ``.module``).

    ``decay_t = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are short.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "state_dict": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])


def lr_at(step: int, cfg: TrainingConfig) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up to ``lr``, then cosine to ``final_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    frac = min((step - cfg.warmup_steps) / span, 1.0)
    lo = cfg.final_lr_ratio * cfg.lr
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * frac))


def make_generators(seed: int) -> dict[str, torch.Generator]:
    """Independent CPU generators for the level choice, the data and the noise/time draws."""
    return {name: torch.Generator().manual_seed(int(seed) * 1000 + i) for i, name in enumerate(("level", "data", "noise"))}


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-step ``checkpoints/step_*.pt`` in ``run_dir`` (or ``None``)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)))
    return found[-1][1] if found else None


def plot_loss_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss (per step, and a running mean) and validation loss per level against step, as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = [r["step"] for r in history if r.get("loss") is not None]
    losses = [r["loss"] for r in history if r.get("loss") is not None]
    if steps:
        ax.plot(steps, losses, color="0.75", lw=0.8, label="train (per step)")
        k = max(1, len(losses) // 50)
        run = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
        ax.plot(steps, run, color="k", lw=1.2, label=f"train (mean of {k})")
    val_keys = sorted({k for r in history for k in r if k.startswith("val_loss_")}, key=lambda s: int(s.rsplit("_", 1)[1]))
    for key in val_keys:
        pts = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        ax.plot(*zip(*pts), "o-", ms=3, label=f"validation {key.rsplit('_', 1)[1]}²")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (L²)")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_title(title or "training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- the loop
def train(
    model: nn.Module,
    sde: SDE,
    dataset: Any,
    schedule: MultilevelSchedule,
    config: TrainingConfig,
    run_dir: str | Path,
    *,
    run_config: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    restrict_from_finest: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model`` (in place) for ``config.steps`` optimiser steps; returns a summary dict.

    Parameters
    ----------
    model : ``nn.Module`` keeping the score protocol ``model(x_t, t, grid) -> eta_hat``.
    dataset : object with ``sample(grid, n, generator) -> (n, C, *grid.shape)``.
    schedule : which level(s) each step trains on (its ``grids`` are the hierarchy, finest last).
    run_config : plain dict stored as the checkpoint's ``config`` (default: the training section).
    resume : continue from the latest checkpoint in ``run_dir/checkpoints`` (bit-identical).
    stop_at : stop (with a checkpoint) after this many steps, without changing the schedule.
    callback : called with each logged metrics row; returning True stops training after that step
        (with a checkpoint), e.g. once a validation target is reached.

    Raises :class:`TrainingDiverged` on a non-finite loss or gradient, naming the step; the
    last checkpoint written is left untouched.
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    grids = schedule.grids
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    device = params[0].device
    opt = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    ema = EMA(model, config.ema_decay)
    gens = make_generators(config.seed)
    history: list[dict] = []
    level_stats = {str(g.shape[0]): {"samples": 0, "wall_s": 0.0, "steps": 0} for g in grids}
    start = 0
    wall_total = 0.0

    existing = latest_checkpoint(run_dir)
    if resume:
        if existing is None:
            raise FileNotFoundError(f"cannot resume: no checkpoints in {ckpt_dir}")
        ck = load_checkpoint(existing)
        saved = ck.get("schedule", {}).get("levels")
        if saved is not None and saved != [g.shape[0] for g in grids]:
            raise ValueError(f"cannot resume {existing}: it was trained on levels {saved}, "
                             f"the schedule now has {[g.shape[0] for g in grids]}")
        model.load_state_dict(ck["model"]["state_dict"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        for k, g in gens.items():
            g.set_state(ck["rng"][k])
        start = int(ck["step"])
        history = list(ck["metrics"]["history"])
        level_stats = ck["metrics"]["levels"]
        wall_total = float(ck["metrics"]["wall_s"])
    elif existing is not None:
        raise FileExistsError(f"{run_dir} already holds checkpoints ({existing.name}); resume, or use a new run directory")

    val = ValidationSet(dataset, grids, sde, config.n_val, config.val_seed, "uniform", config.eps)
    end = config.steps if stop_at is None else min(int(stop_at), config.steps)
    cfg_dict = run_config if run_config is not None else {"training": _asdict(config)}
    last_good: Path | None = existing if resume else None

    def checkpoint(step: int) -> Path:
        nonlocal last_good
        ck = {
            "config": cfg_dict,
            "model": {"spec": getattr(model, "spec", None), "state_dict": model.state_dict()},
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "rng": {k: g.get_state() for k, g in gens.items()},
            "metrics": {"history": history, "levels": level_stats, "wall_s": wall_total},
            "sde": sde.to_dict(),
            "schedule": schedule.to_dict(),
        }
        path = save_checkpoint(ckpt_dir / f"step_{step:08d}.pt", ck)
        old = sorted(p for p in ckpt_dir.iterdir() if _CKPT_RE.match(p.name))
        for p in old[:-config.keep_checkpoints]:
            p.unlink()
        last_good = path
        return path

    def write_metrics(final: bool = False) -> None:
        write_csv(run_dir / "metrics.csv", history)
        summary = {"steps": history[-1]["step"] if history else 0, "wall_s": wall_total, "levels": level_stats,
                   "schedule": schedule.to_dict(), "history": history}
        vals = [r for r in history if any(k.startswith("val_loss_") for k in r)]
        if vals:
            summary["final_validation"] = {k: v for k, v in vals[-1].items() if k.startswith("val_loss_")}
        write_json(run_dir / "metrics.json", summary)
        if final and history:
            plot_loss_curve(history, run_dir / "loss.png", title=f"{schedule.kind} on {[g.shape[0] for g in grids]}")

    run_dir.mkdir(parents=True, exist_ok=True)
    bar_ctx = _progress(progress, config.steps, start)
    with bar_ctx as bar:
        for step in range(start, end):
            t_step = time.perf_counter()
            lr = lr_at(step, config)
            for group in opt.param_groups:
                group["lr"] = lr
            model.train()
            terms = draw_terms(schedule, step, config.steps, dataset, sde, config.batch_size, gens,
                               time_sampling=config.time_sampling, eps=config.eps,
                               restrict_from_finest=restrict_from_finest)
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), dtype=torch.float64)
            for term in terms:
                t_term = time.perf_counter()
                term.x0, term.t, term.eta = term.x0.to(device), term.t.to(device), term.eta.to(device)
                mb = config.micro_batch_size or term.n
                for i in range(0, term.n, mb):
                    part = term_loss(model, term, grids, sde, config.weighting, slice(i, i + mb)).sum() / term.n
                    part.backward()
                    total += part.detach().double().cpu()
                stats = level_stats[str(grids[term.level].shape[0])]
                stats["samples"] += term.n
                stats["wall_s"] += time.perf_counter() - t_term
                if term.coupled:
                    level_stats[str(grids[term.level - 1].shape[0])]["samples"] += term.n
            loss = float(total)
            if not math.isfinite(loss):
                write_metrics()
                raise TrainingDiverged(f"non-finite loss ({loss}) at step {step + 1}; last good checkpoint: {last_good}")
            gnorm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else math.inf)
            if not torch.isfinite(gnorm):
                write_metrics()
                raise TrainingDiverged(f"non-finite gradient norm at step {step + 1}; last good checkpoint: {last_good}")
            opt.step()
            ema.update(model)
            done = step + 1
            wall_total += time.perf_counter() - t_step
            level_name = "mlmc" if schedule.kind == "mlmc" else grids[terms[0].level].shape[0]
            if schedule.kind != "mlmc":
                level_stats[str(level_name)]["steps"] += 1
            row = {"step": done, "level": level_name, "loss": loss, "lr": lr, "grad_norm": float(gnorm), "wall_s": wall_total}
            eval_now = done == config.steps or (config.eval_every and done % config.eval_every == 0)
            if eval_now:
                for g, v in zip(grids, val.losses(ema.module, config.weighting)):
                    row[f"val_loss_{g.shape[0]}"] = v
            stop = bool(config.time_limit_s) and wall_total >= config.time_limit_s
            if stop and not eval_now:
                for g, v in zip(grids, val.losses(ema.module, config.weighting)):
                    row[f"val_loss_{g.shape[0]}"] = v
                eval_now = True
            if eval_now or done % config.log_every == 0:
                history.append(row)
                if callback is not None:
                    stop = bool(callback(row)) or stop
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", level=level_name)
            if stop or done == end or (config.checkpoint_every and done % config.checkpoint_every == 0):
                checkpoint(done)
                write_metrics(final=stop or done == end)
            if stop:
                end = done
                break
    return {"step": end, "wall_s": wall_total, "levels": level_stats, "history": history,
            "checkpoint": str(last_good) if last_good else None}


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


def _asdict(cfg) -> dict:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


# --------------------------------------------------------------------------- config-level API
def _build(cfg: RunConfig):
    from .config import ConfigError
    from .data import dataset_from_dict
    from .models import QColouredOutput, SpectralPreconditioner, build_model

    grid = cfg.grid.build()
    sde = cfg.sde.build()
    dataset = dataset_from_dict(cfg.data.spec())
    spec = cfg.model.spec(in_channels=int(getattr(dataset, "channels", 1)))
    output = spec.pop("output", "eta")
    if output not in ("eta", "whitened"):
        raise ConfigError(f"model.output: must be 'eta' or 'whitened' (Q^(1/2)-coloured output); got {output!r}")
    precondition = spec.pop("precondition", "none")
    extrapolation = spec.pop("extrapolation", "zero")
    stats_samples = spec.pop("stats_samples", 20000)
    if precondition not in ("none", "spectral"):
        raise ConfigError(f"model.precondition: must be 'none' or 'spectral'; got {precondition!r}")
    if precondition == "spectral":
        if output != "eta":
            raise ConfigError("model.precondition = 'spectral' already scales the output; leave model.output = 'eta'")
        if isinstance(stats_samples, bool) or not isinstance(stats_samples, int) or stats_samples < 2:
            raise ConfigError(f"model.stats_samples: must be an integer >= 2; got {stats_samples!r}")
        spec.setdefault("cond_channels", spec["in_channels"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.training.seed)
        model = build_model(spec)
    if output == "whitened":
        model = QColouredOutput(model, sde.covariance)
    if precondition == "spectral":
        model = SpectralPreconditioner(model, sde, data_statistics(dataset, grid, stats_samples, extrapolation,
                                                                   seed=cfg.training.seed))
    return grid, sde, dataset, model


def data_statistics(dataset, grid: Grid, n: int, extrapolation: str = "zero", seed: int = 0):
    """Per-mode statistics of ``n`` functions of ``dataset`` on ``grid`` (a fitted :class:`SpectralStatistics`).

    Data sets with a finite split (MNIST) use ``min(n, len)`` distinct items; others draw ``n``.
    """
    from .data.statistics import SpectralStatistics

    stats = SpectralStatistics(grid.shape, grid.length, int(getattr(dataset, "channels", 1)), extrapolation)
    if hasattr(dataset, "__len__") and hasattr(dataset, "materialize"):
        return stats.fit(dataset.materialize(grid, min(int(n), len(dataset)), seed=seed))
    return stats.fit_dataset(dataset, int(n), torch.Generator().manual_seed(int(seed) + 7))


def train_from_config(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Build grid, SDE, data set, model and schedule from ``cfg`` and train into ``run_dir``.

    Writes ``config.toml``, ``checkpoints/``, ``metrics.csv``, ``metrics.json``, ``loss.png``;
    returns the path of the final checkpoint. Model initialisation uses ``training.seed`` (the
    global RNG is forked and restored).
    """
    run_dir = Path(run_dir)
    grid, sde, dataset, model = _build(cfg)
    ml = cfg.multilevel
    grids = hierarchy(grid, ml.levels or None)
    schedule = MultilevelSchedule(grids, ml.schedule, fractions=ml.fractions or None,
                                  probabilities=ml.probabilities or None, samples=ml.samples or None, level=ml.level)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_toml(run_dir / "config.toml", cfg.to_dict())
    train(model, sde, dataset, schedule, cfg.training, run_dir, run_config=cfg.to_dict(), resume=resume,
          progress=progress, restrict_from_finest=ml.restrict_from_finest)
    path = latest_checkpoint(run_dir)
    assert path is not None
    return path


def resolve_checkpoint(run_dir_or_ckpt: str | Path) -> Path:
    """The checkpoint file itself, or a run directory's latest; ``FileNotFoundError`` for a directory without any."""
    p = Path(run_dir_or_ckpt)
    if p.is_dir():
        ck_path = latest_checkpoint(p)
        if ck_path is None:
            raise FileNotFoundError(f"{p} holds no checkpoints (expected {p / 'checkpoints' / 'step_XXXXXXXX.pt'})")
        return ck_path
    return p


def load_run(run_dir_or_ckpt: str | Path) -> tuple[nn.Module, SDE, Grid, RunConfig]:
    """``(model with EMA weights, in eval mode; sde; finest grid; config)`` from a run directory or checkpoint file.

    Raises :class:`fsdiff.io.CheckpointError` for files that are not fsdiff checkpoints and
    ``FileNotFoundError`` for a directory without checkpoints.
    """
    from .io import CheckpointError
    from .models import build_model

    p = resolve_checkpoint(run_dir_or_ckpt)
    ck = load_checkpoint(p)
    spec = ck["model"]["spec"]
    if not isinstance(spec, dict) or "type" not in spec:
        raise CheckpointError(f"{p}: the checkpoint's model spec {spec!r} cannot be rebuilt (needs a dict with 'type')")
    cfg = config_from_dict(ck["config"])
    model = build_model(spec)
    state = ck["ema"]["state_dict"] if ck.get("ema") else ck["model"]["state_dict"]
    model.load_state_dict(state)
    model.eval()
    sde = sde_from_dict(ck["sde"]) if "sde" in ck else cfg.sde.build()
    return model, sde, cfg.grid.build(), cfg


def export_run(run_dir_or_ckpt: str | Path, out: str | Path) -> Path:
    """Write a pretrained-model file from a run: EMA weights, config, SDE, data statistics, metrics summary.

    No optimizer state, no random-generator states: the file is for sampling only (``load_run``
    reads it like a checkpoint, with ``weights_only=True``). Written atomically; returns ``out``.
    """
    from .io import CheckpointError

    p = resolve_checkpoint(run_dir_or_ckpt)
    ck = load_checkpoint(p)
    if not isinstance(ck["model"].get("spec"), dict):
        raise CheckpointError(f"{p}: the checkpoint's model has no plain-data spec; it cannot be exported")
    weights = ck["ema"]["state_dict"] if ck.get("ema") else ck["model"]["state_dict"]
    metrics = ck.get("metrics", {})
    hist = metrics.get("history", []) if isinstance(metrics, dict) else []
    final = {k: v for k, v in (hist[-1] if hist else {}).items() if k.startswith("val_loss_")}
    out_ck = {
        "kind": PRETRAINED_KIND,
        "config": ck["config"],
        "model": {"spec": ck["model"]["spec"], "state_dict": {k: v.detach().clone() for k, v in weights.items()}},
        "step": int(ck["step"]),
        "sde": ck.get("sde"),
        "schedule": ck.get("schedule"),
        "metrics": {"wall_s": float(metrics.get("wall_s", 0.0)) if isinstance(metrics, dict) else 0.0,
                    "final_validation": final, "source": p.name},
    }
    if out_ck["sde"] is None:
        del out_ck["sde"]
    return save_checkpoint(out, out_ck)


def train_to_target(model: nn.Module, sde: SDE, dataset, schedule: MultilevelSchedule, cfg: TrainingConfig,
                    run_dir: str | Path, target: float | None, budget_s: float) -> dict:
    """Train until the finest level's validation loss reaches ``target`` or ``budget_s`` seconds pass.

    Used to compare schedules by wall-clock to equal finest-level validation loss. Returns
    ``{"schedule", "curve": [(wall_s, step, val_loss)], "hit": {wall_s, step, val} | None,
    "levels", "steps", "wall_s"}``.
    """
    fine = schedule.grids[-1].shape[0]
    curve: list[tuple[float, int, float]] = []
    hit: dict = {}

    def callback(row: dict) -> bool:
        v = row.get(f"val_loss_{fine}")
        if v is None:
            return row["wall_s"] > budget_s
        curve.append((row["wall_s"], row["step"], v))
        if target is not None and v <= target and not hit:
            hit.update(wall_s=row["wall_s"], step=row["step"], val=v)
            return True
        return row["wall_s"] > budget_s

    out = train(model, sde, dataset, schedule, cfg, run_dir, progress=False, callback=callback)
    return {"schedule": schedule.kind, "curve": curve, "hit": hit or None, "levels": out["levels"],
            "steps": out["step"], "wall_s": out["wall_s"]}
