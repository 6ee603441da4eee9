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

from .. import _seeds
from ..config import TrainingConfig
from ..errors import OutputError, RunDirectoryError, TrainingDiverged
from ..io import load_checkpoint, load_state, save_checkpoint, write_csv, write_json
from ..plotting import plot_loss_curve
from ..sde import SDE
from .distributed import World, current_world, local_shards, shard_generators
from .ema import EMA
from .rundir import remove_run_orphans, resume_changes, run_lock
from .multilevel import MultilevelSchedule, ValidationSet, draw_terms, term_loss
from .schedule import lr_at

__all__ = ["TrainingDiverged", "make_generators", "latest_checkpoint", "train", "train_to_target"]

_CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")




def make_generators(seed: int) -> dict[str, torch.Generator]:
    """Independent CPU generators for the level choice, the data and the noise/time draws."""
    return {name: torch.Generator().manual_seed(int(seed) * _seeds.TRAINING_STRIDE + i)
            for i, name in enumerate(_seeds.TRAINING_STREAMS)}


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-step ``checkpoints/step_*.pt`` in ``run_dir`` (or ``None``)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)))
    return found[-1][1] if found else None


# --------------------------------------------------------------------------- the loop
class _RunState:
    """Everything a training run carries between steps, and how it is saved and restored.

    Holds the optimiser, EMA, generators, metric history, per-level statistics and wall-clock;
    :meth:`save` writes a checkpoint (and prunes old ones), :meth:`restore` reads one back
    bit-identically, :meth:`write_metrics` writes ``metrics.csv`` / ``metrics.json`` / ``loss.png``.
    """

    def __init__(self, model: nn.Module, sde: SDE, schedule: MultilevelSchedule, config: TrainingConfig,
                 run_dir: Path, cfg_dict: dict, world: World | None = None):
        self.model, self.sde, self.schedule, self.config = model, sde, schedule, config
        self.world = world or World()
        self.run_dir, self.ckpt_dir, self.cfg_dict = run_dir, run_dir / "checkpoints", cfg_dict
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no trainable parameters")
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        self.ema = EMA(model, config.ema_decay)
        self.gens = make_generators(config.seed)  # "level" is shared by all ranks; "data"/"noise" are shard 0's
        self.shards = {j: (self.gens if j == 0 else shard_generators(config.seed, j))
                       for j in local_shards(config.data_shards, self.world)}
        self.forward_model = _replicated(model, config, self.world)
        self.history: list[dict] = []
        self.level_stats = {str(g.shape[0]): {"samples": 0, "wall_s": 0.0, "steps": 0} for g in schedule.grids}
        self.start = 0
        self.wall_total = 0.0
        self.resumes: list[dict] = []  # config changes accepted on resume: {"step", "changes"}
        self.last_good: Path | None = None

    def restore(self, path: Path, force_config: bool = False) -> None:
        """Continue from checkpoint ``path``: weights, EMA, optimiser, generators, metrics, step.

        The resume rules of :func:`~fsdiff.training.rundir.resume_changes` apply to the stored config;
        allowed changes are recorded in the metrics (``resumes``).
        """
        ck = load_checkpoint(path)
        changes = resume_changes(ck["config"], self.cfg_dict, force_config)
        levels = [g.shape[0] for g in self.schedule.grids]
        saved = ck.get("schedule", {}).get("levels")
        if saved is not None and saved != levels:
            raise ValueError(f"cannot resume {path}: it was trained on levels {saved}, the schedule now has {levels}")
        load_state(self.model, ck["model"]["state_dict"], path, ck["model"].get("spec"), getattr(self.model, "spec", None))
        self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["optimizer"])
        self.gens["level"].set_state(ck["rng"]["level"])
        for j, gens in self.shards.items():
            saved = ck["rng"] if j == 0 else ck["rng"]["shards"][j - 1]
            for k in ("data", "noise"):
                gens[k].set_state(saved[k])
        self.start = int(ck["step"])
        self.history = list(ck["metrics"]["history"])
        self.level_stats = ck["metrics"]["levels"]
        self.wall_total = float(ck["metrics"]["wall_s"])
        self.resumes = list(ck["metrics"].get("resumes", []))
        if changes:
            self.resumes.append({"step": self.start, "changes": changes})
        self.last_good = path

    def save(self, step: int) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX.pt`` (atomically) and keep the newest ``keep_checkpoints``.

        Collective in a data-parallel run: every rank sends its shards' generator states, rank 0 writes
        (the others return ``None``).
        """
        gathered = self.world.gather({j: {k: g[k].get_state() for k in ("data", "noise")} for j, g in self.shards.items()})
        if not self.world.is_main:
            return None
        states = {j: st for part in gathered for j, st in part.items()}
        rng = {"level": self.gens["level"].get_state(), **states[0]}
        if len(states) > 1:
            rng["shards"] = [states[j] for j in range(1, len(states))]
        ck = {
            "config": self.cfg_dict,
            "model": {"spec": getattr(self.model, "spec", None), "state_dict": self.model.state_dict()},
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": step,
            "rng": rng,
            "metrics": {"history": self.history, "levels": self.level_stats, "wall_s": self.wall_total,
                        **({"resumes": self.resumes} if self.resumes else {})},
            "sde": self.sde.to_dict(),
            "schedule": self.schedule.to_dict(),
        }
        try:
            path = save_checkpoint(self.ckpt_dir / f"step_{step:08d}.pt", ck)
        except OutputError as e:
            raise OutputError(e.errno, f"{e.strerror} (checkpoint of step {step}; the last good checkpoint "
                                       f"{self.last_good} is intact)") from None
        old = sorted(p for p in self.ckpt_dir.iterdir() if _CKPT_RE.match(p.name))
        for p in old[:-self.config.keep_checkpoints]:
            p.unlink()
        self.last_good = path
        return path

    def write_metrics(self, final: bool = False) -> None:
        history = self.history
        write_csv(self.run_dir / "metrics.csv", history)
        summary = {"steps": history[-1]["step"] if history else 0, "wall_s": self.wall_total, "levels": self.level_stats,
                   "schedule": self.schedule.to_dict(), "history": history,
                   **({"resumes": self.resumes} if self.resumes else {})}
        vals = [r for r in history if any(k.startswith("val_loss_") for k in r)]
        if vals:
            summary["final_validation"] = {k: v for k, v in vals[-1].items() if k.startswith("val_loss_")}
        write_json(self.run_dir / "metrics.json", summary)
        if final and history:
            plot_loss_curve(history, self.run_dir / "loss.png",
                            title=f"{self.schedule.kind} on {[g.shape[0] for g in self.schedule.grids]}")

    def gradient_step(self, step: int, dataset: Any, restrict_from_finest: bool) -> tuple[float, float, float, Any]:
        """One optimiser step at ``step`` (0-based): ``(loss, gradient norm, learning rate, level name)``.

        Raises :class:`TrainingDiverged` (after writing the metrics) on a non-finite loss or gradient.
        """
        config, model, grids = self.config, self.model, self.schedule.grids
        device = self.params[0].device
        lr = lr_at(step, config)
        for group in self.opt.param_groups:
            group["lr"] = lr
        model.train()
        terms = draw_terms(self.schedule, step, config.steps, dataset, self.sde, config.batch_size, self.gens,
                           time_sampling=config.time_sampling, eps=config.eps, restrict_from_finest=restrict_from_finest,
                           shards=list(self.shards.values()), n_shards=config.data_shards)
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64)
        mb = config.micro_batch_size
        parts = [(term, slice(i, i + (mb or term.n))) for term in terms for i in range(0, term.n, mb or term.n)]
        for index, (term, rows) in enumerate(parts):
            t_term = time.perf_counter()
            if rows.start == 0:
                term.x0, term.t, term.eta = term.x0.to(device), term.t.to(device), term.eta.to(device)
            # a data-parallel run averages the gradients of the ranks once, after the last backward pass
            sync = self.forward_model.no_sync() if index < len(parts) - 1 and self.world.distributed else nullcontext()
            with sync:
                with _autocast(config.precision, device):
                    part = term_loss(self.forward_model, term, grids, self.sde, config.weighting, rows).sum() / term.n
                part.backward()
            total += part.detach().double().cpu()
            stats = self.level_stats[str(grids[term.level].shape[0])]
            if rows.stop >= term.n:
                stats["samples"] += term.n * self.world.size
                if term.coupled:
                    self.level_stats[str(grids[term.level - 1].shape[0])]["samples"] += term.n * self.world.size
            stats["wall_s"] += time.perf_counter() - t_term
        total = torch.tensor(self.world.mean(float(total)), dtype=torch.float64)
        loss = float(total)
        if not math.isfinite(loss):
            self.write_metrics()
            raise TrainingDiverged(f"non-finite loss ({loss}) at step {step + 1}; last good checkpoint: {self.last_good}")
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip if config.grad_clip > 0 else math.inf)
        if not torch.isfinite(gnorm):
            self.write_metrics()
            raise TrainingDiverged(f"non-finite gradient norm at step {step + 1}; last good checkpoint: {self.last_good}")
        self.opt.step()
        self.ema.update(model)
        level_name = "mlmc" if self.schedule.kind == "mlmc" else grids[terms[0].level].shape[0]
        if self.schedule.kind != "mlmc":
            self.level_stats[str(level_name)]["steps"] += 1
        return loss, float(gnorm), lr, level_name


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
    force_config: bool = False,
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
    force_config : on resume, accept changes outside :data:`~fsdiff.training.rundir.RESUMABLE_FIELDS`.

    Notes
    -----
    The run directory is locked while training (:func:`~fsdiff.training.rundir.run_lock`) and
    leftovers of crashed writes are removed first. Inside an initialised process group (``torchrun``,
    :mod:`fsdiff.training.distributed`) every rank calls this; rank 0 alone locks, writes and shows
    progress, and the model is wrapped in ``DistributedDataParallel``. Raises :class:`TrainingDiverged` on a non-finite
    loss or gradient, naming the step; the last checkpoint written is left untouched.
    """
    world = current_world()
    with run_lock(run_dir) if world.is_main else nullcontext():
        return _train_locked(model, sde, dataset, schedule, config, Path(run_dir), run_config, resume, progress,
                             stop_at, restrict_from_finest, callback, force_config)


def _train_locked(model, sde, dataset, schedule, config, run_dir: Path, run_config, resume, progress, stop_at,
                  restrict_from_finest, callback, force_config) -> dict:
    grids = schedule.grids
    sde.check_noise(grids[-1].ndim)
    world = current_world()
    state = _RunState(model, sde, schedule, config, run_dir,
                      run_config if run_config is not None else {"training": _asdict(config)}, world)
    existing = latest_checkpoint(run_dir)
    if resume:
        if existing is None:
            raise FileNotFoundError(f"cannot resume: no checkpoints in {state.ckpt_dir}")
        state.restore(existing, force_config)
    elif existing is not None:
        raise RunDirectoryError(f"{run_dir} already holds checkpoints ({existing.name}); resume, or use a new run directory")
    if world.is_main:
        remove_run_orphans(run_dir)
    world.barrier()  # every rank has checked the run directory before rank 0 writes to it

    val = ValidationSet(dataset, grids, sde, config.n_val, config.val_seed, "uniform", config.eps) if world.is_main else None
    end = config.steps if stop_at is None else min(int(stop_at), config.steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _progress(progress and world.is_main, config.steps, state.start) as bar:
        for step in range(state.start, end):
            t_step = time.perf_counter()
            loss, gnorm, lr, level_name = state.gradient_step(step, dataset, restrict_from_finest)
            done = step + 1
            state.wall_total += time.perf_counter() - t_step
            row = {"step": done, "level": level_name, "loss": loss, "lr": lr, "grad_norm": gnorm, "wall_s": state.wall_total}
            stop = world.any(bool(config.time_limit_s) and state.wall_total >= config.time_limit_s)
            eval_now = done == config.steps or bool(config.eval_every and done % config.eval_every == 0) or stop
            if eval_now and world.is_main:  # the EMA is the same on every rank
                for g, v in zip(grids, val.losses(state.ema.module, config.weighting)):
                    row[f"val_loss_{g.shape[0]}"] = v
            if eval_now or done % config.log_every == 0:
                state.history.append(row)
                if callback is not None and world.is_main:
                    stop = bool(callback(row)) or stop
                stop = world.any(stop)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", level=level_name)
            if stop or done == end or (config.checkpoint_every and done % config.checkpoint_every == 0):
                state.save(done)
                if world.is_main:
                    state.write_metrics(final=stop or done == end)
            if stop:
                end = done
                break
    return {"step": end, "wall_s": state.wall_total, "levels": state.level_stats, "history": state.history,
            "checkpoint": str(state.last_good) if state.last_good else None}


class _Replicated:
    """The model as a data-parallel run calls it: a ``DistributedDataParallel`` wrapper that still
    answers the score protocol's attributes (e.g. a preconditioner's ``loss_weight``)."""

    def __init__(self, wrapped: nn.Module, module: nn.Module):
        self.wrapped, self.module = wrapped, module

    def __call__(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs)

    def no_sync(self):
        return self.wrapped.no_sync()

    def __getattr__(self, name: str):
        return getattr(self.module, name)


def _replicated(model: nn.Module, config: TrainingConfig, world: World):
    """What the step calls: the model, compiled if ``config.compile``, wrapped for DDP when distributed."""
    wrapped = torch.compile(model) if config.compile else model
    if not world.distributed:
        return wrapped
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    ddp = DistributedDataParallel(wrapped, device_ids=[dev.index] if dev.type == "cuda" else None)
    return _Replicated(ddp, model)


def _autocast(precision: str, device: torch.device):
    """bf16 autocast for ``precision = "bf16"`` (the spectral layers run their FFTs in fp32), else nothing."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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
