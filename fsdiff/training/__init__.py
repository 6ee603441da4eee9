"""Training: the function-space loop with exact resume, multilevel schedules, runs from configs, and
the small :func:`fit` loop that every other trainer (SNO, WPO, NDSM, classifier) uses.

One :class:`EMA` and one learning-rate schedule (:func:`cosine_lr`) serve all of them.
"""

from .ema import EMA
from .fit import FitResult, fit
from .loop import TrainingDiverged, latest_checkpoint, make_generators, train, train_to_target
from .multilevel import MultilevelSchedule, ValidationSet, hierarchy, mlmc_loss
from .distributed import World, current_world, init_distributed
from .runs import (PRETRAINED_KIND, data_statistics, export_run, load_run, resolve_checkpoint, resolve_device,
                   train_from_config)
from .schedule import cosine_lr, lr_at

__all__ = [
    "EMA", "FitResult", "fit", "cosine_lr", "lr_at",
    "TrainingDiverged", "latest_checkpoint", "make_generators", "train", "train_to_target",
    "MultilevelSchedule", "ValidationSet", "hierarchy", "mlmc_loss",
    "PRETRAINED_KIND", "data_statistics", "export_run", "load_run", "resolve_checkpoint", "resolve_device",
    "train_from_config", "World", "current_world", "init_distributed",
]
