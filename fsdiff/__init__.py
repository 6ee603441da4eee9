"""fsdiff: score-based diffusion in function space.

The core, exported here: functions on periodic grids (:class:`Grid`), trace-class Gaussian noise
given by spectral covariances, Hilbert-space SDEs driven by Q-Wiener noise, the conversions
between the network's output and ``Q grad log p_t``, the DSM loss, score operators, samplers at
any resolution, exact oracles, configs, training and checkpoints.

Everything else lives in role-named subpackages, imported on first use (``fsdiff.eval``,
``fsdiff.points``, ...): see ``docs/architecture.md`` for who owns what and ``docs/api.md`` for
every exported name.
"""

from __future__ import annotations

import importlib
from typing import Any

from .covariance import (
    Covariance,
    LaplacianPower,
    Matern,
    RandomSpectral,
    ScaledCovariance,
    SquaredExponential,
    SumCovariance,
    White,
    covariance_from_dict,
)
from .grid import Grid, from_dataarray, resample, subsample, to_dataarray
from .parametrization import eta_to_qscore, eta_to_x0, qscore_to_eta, x0_to_eta
from .sde import SDE, VESDE, VPSDE, sde_from_dict
from .losses import dsm_loss, sample_time
from .models import FNOScore, SpectralPreconditioner, UNOScore, build_model
from .oracles import GaussianMixtureScore, GaussianScore
from .sampling import sample, sample_coarse_to_fine, time_steps
from .config import ConfigError, RunConfig, load_config
from .io import CheckpointError, load_checkpoint, save_checkpoint
from .training import load_run, train, train_from_config

__version__ = "0.1.0"

#: the role-named subpackages, imported on first attribute access (``fsdiff.eval`` ...)
SUBPACKAGES = ("app", "conditional", "data", "eval", "models", "points", "sampling", "sno", "training")

__all__ = [
    # grids and noise
    "Grid", "resample", "subsample", "to_dataarray", "from_dataarray",
    "Covariance", "Matern", "LaplacianPower", "SquaredExponential", "White", "RandomSpectral",
    "SumCovariance", "ScaledCovariance", "covariance_from_dict",
    # SDEs and parametrisation
    "SDE", "VPSDE", "VESDE", "sde_from_dict",
    "eta_to_qscore", "qscore_to_eta", "eta_to_x0", "x0_to_eta",
    # loss, models, oracles, samplers
    "dsm_loss", "sample_time", "FNOScore", "UNOScore", "SpectralPreconditioner", "build_model",
    "GaussianScore", "GaussianMixtureScore", "sample", "sample_coarse_to_fine", "time_steps",
    # configs, training, checkpoints
    "RunConfig", "ConfigError", "load_config", "train", "train_from_config", "load_run",
    "save_checkpoint", "load_checkpoint", "CheckpointError",
]


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fsdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBPACKAGES))
