"""The function-space training loop: AdamW, warm-up + cosine learning rate, EMA, clipping, accumulation, checkpoints.

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

import math
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import TrainingConfig
from ..io import load_checkpoint, save_checkpoint, write_csv, write_json
from ..plotting import plot_loss_curve
from ..sde import SDE
from .ema import EMA
from .multilevel import MultilevelSchedule, ValidationSet, draw_terms, term_loss
from .schedule import lr_at

__all__ = ["TrainingDiverged", "make_generators", "latest_checkpoint", "train", "train_to_target"]

_CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


class TrainingDiverged(FloatingPointError):
    """The loss or gradient became non-finite; the message names the step and the last good checkpoint."""


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
