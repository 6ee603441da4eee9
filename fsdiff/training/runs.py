"""Runs from configs: build everything a TOML file names, train it, load it back, export it for sampling."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._seeds import STATISTICS, derived
from ..config import RunConfig, config_from_dict
from ..grid import Grid
from ..errors import RunDirectoryError
from ..io import load_checkpoint, load_state, save_checkpoint, write_toml
from ..sde import SDE, sde_from_dict
from .loop import latest_checkpoint, train
from .multilevel import MultilevelSchedule, hierarchy
from .rundir import resume_changes, run_lock

__all__ = ["PRETRAINED_KIND", "data_statistics", "train_from_config", "resolve_device", "resolve_checkpoint", "load_run", "export_run"]

#: ``ckpt["kind"]`` of files written by :func:`export_run`
PRETRAINED_KIND = "fsdiff-pretrained"


def _build(cfg: RunConfig):
    from ..config import ConfigError
    from ..data import dataset_from_dict
    from ..models import QColouredOutput, SpectralPreconditioner, build_model

    grid = cfg.grid.build()
    sde = cfg.sde.build()
    sde.check_noise(grid.ndim)  # white noise in 2-D is refused here, before any file is written
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
    from ..data.statistics import SpectralStatistics

    stats = SpectralStatistics(grid.shape, grid.length, int(getattr(dataset, "channels", 1)), extrapolation)
    if hasattr(dataset, "__len__") and hasattr(dataset, "materialize"):
        return stats.fit(dataset.materialize(grid, min(int(n), len(dataset)), seed=seed))
    return stats.fit_dataset(dataset, int(n), derived(seed, STATISTICS))


def train_from_config(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                      force_config: bool = False, device: str | torch.device = "cpu") -> Path:
    """Build grid, SDE, data set, model and schedule from ``cfg`` and train into ``run_dir``.

    Writes ``config.toml``, ``checkpoints/``, ``metrics.csv``, ``metrics.json``, ``loss.png``;
    returns the path of the final checkpoint. Model initialisation uses ``training.seed`` (the
    global RNG is forked and restored).

    Safety (:mod:`fsdiff.training.rundir`): the run directory is locked for the whole call; every
    check (checkpoints present without ``resume``, none with it, the resume rules for a changed
    config) passes before anything is written; ``config.toml`` is rewritten on resume only when
    allowed fields changed (the change is also recorded in the metrics).

    ``device``: ``"cpu"``, ``"cuda"`` (``cuda:LOCAL_RANK`` under torchrun) or ``"auto"`` (CUDA when
    available). Under ``torchrun`` (``WORLD_SIZE > 1``) this joins the process group
    (:func:`~fsdiff.training.distributed.init_distributed`) and trains data-parallel; every rank makes
    the same checks, rank 0 alone writes.
    """
    from contextlib import nullcontext

    from .distributed import init_distributed, local_shards

    run_dir = Path(run_dir)
    new = cfg.to_dict()
    dev = resolve_device(device)
    world = init_distributed(dev)
    local_shards(cfg.training.data_shards, world)  # refused before anything is written
    if dev.type == "cuda" and world.distributed:
        dev = torch.device("cuda", torch.cuda.current_device())
    with run_lock(run_dir) if world.is_main else nullcontext():
        existing = latest_checkpoint(run_dir)
        if resume and existing is None:
            raise FileNotFoundError(f"cannot resume: no checkpoints in {run_dir / 'checkpoints'}")
        if not resume and existing is not None:
            raise RunDirectoryError(f"{run_dir} already holds checkpoints ({existing.name}); pass --resume to "
                                    "continue it, or use a new run directory")
        changes = resume_changes(load_checkpoint(existing)["config"], new, force_config) if resume else {}
        grid, sde, dataset, model = _build(cfg)
        model = model.to(dev)
        ml = cfg.multilevel
        grids = hierarchy(grid, ml.levels or None)
        schedule = MultilevelSchedule(grids, ml.schedule, fractions=ml.fractions or None,
                                      probabilities=ml.probabilities or None, samples=ml.samples or None, level=ml.level)
        if (not resume or changes) and world.is_main:
            write_toml(run_dir / "config.toml", new)
        train(model, sde, dataset, schedule, cfg.training, run_dir, run_config=new, resume=resume,
              progress=progress, restrict_from_finest=ml.restrict_from_finest, force_config=force_config)
        world.barrier()  # rank 0 has written the final checkpoint before any rank looks for it
        path = latest_checkpoint(run_dir)
    assert path is not None
    return path


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` / ``"auto"`` (CUDA if available) as a ``torch.device``; clear errors."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no CUDA device (torch "
                         f"{torch.__version__}); use --device cpu or auto")
    return dev


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
    from ..io import CheckpointError
    from ..models import build_model

    p = resolve_checkpoint(run_dir_or_ckpt)
    ck = load_checkpoint(p)
    spec = ck["model"]["spec"]
    if not isinstance(spec, dict) or "type" not in spec:
        raise CheckpointError(f"{p}: the checkpoint's model spec {spec!r} cannot be rebuilt (needs a dict with 'type')")
    cfg = config_from_dict(ck["config"])
    model = build_model(spec)
    state = ck["ema"]["state_dict"] if ck.get("ema") else ck["model"]["state_dict"]
    load_state(model, state, p, spec, getattr(model, "spec", None))
    model.eval()
    sde = sde_from_dict(ck["sde"]) if "sde" in ck else cfg.sde.build()
    return model, sde, cfg.grid.build(), cfg


def export_run(run_dir_or_ckpt: str | Path, out: str | Path) -> Path:
    """Write a pretrained-model file from a run: EMA weights, config, SDE, data statistics, metrics summary.

    No optimizer state, no random-generator states: the file is for sampling only (``load_run``
    reads it like a checkpoint, with ``weights_only=True``). Written atomically; returns ``out``.
    """
    from ..io import CheckpointError

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
