"""fsdiff: score-based diffusion in function space.

Functions on periodic grids (:class:`Grid`), trace-class Gaussian noise given by spectral
covariances (:mod:`fsdiff.covariance`), Hilbert-space SDEs driven by Q-Wiener noise
(:mod:`fsdiff.sde`), score operators that learn ``Q grad log p_t`` at any resolution
(:mod:`fsdiff.models`), multilevel training, samplers, exact oracles and metrics.
"""

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
from .models import (FNOScore, NeuralopFNOScore, QColouredOutput, SpectralPreconditioner, UNOScore, build_model)
from .oracles import GaussianMixtureScore, GaussianScore
from .sampling import sample, sample_coarse_to_fine
from .sampling import time_steps
from .data import (
    MNIST,
    DarcyFlow,
    GaussianRandomField,
    LogNormalField,
    ThresholdedField,
    dataset_from_dict,
    load_mnist,
)
from .data.statistics import SpectralStatistics
from .config import ConfigError, RunConfig, load_config
from .training import EMA, MultilevelSchedule, TrainingDiverged, hierarchy, load_run, mlmc_loss, train, train_from_config
from .io import CheckpointError, load_checkpoint, save_checkpoint
from .eval.invariance import evaluate_invariance
from .sno import (GaussianMixture, GMMFamily, KernelMeanEmbedding, ScoreNeuralOperator, SNOTrainConfig, prototype_encoding,
                  relative_score_error, sno_point_score, train_sno)
from .points import NDSM, EmpiricalKernelScore, ReferenceMixture, WPOKernelScore, fit_reference_mixture, train_wpo
from . import points
from .eval import metrics

__version__ = "0.1.0"

__all__ = [
    # grids and noise
    "Grid", "resample", "subsample", "to_dataarray", "from_dataarray",
    "Covariance", "Matern", "LaplacianPower", "SquaredExponential", "White", "RandomSpectral",
    "SumCovariance", "ScaledCovariance", "covariance_from_dict",
    # SDEs and parametrisation
    "SDE", "VPSDE", "VESDE", "sde_from_dict",
    "eta_to_qscore", "qscore_to_eta", "eta_to_x0", "x0_to_eta",
    # models, losses, oracles, samplers
    "FNOScore", "NeuralopFNOScore", "QColouredOutput", "UNOScore", "SpectralPreconditioner",
    "SpectralStatistics", "build_model", "dsm_loss", "sample_time",
    "GaussianScore", "GaussianMixtureScore", "sample", "sample_coarse_to_fine", "time_steps",
    # data
    "MNIST", "load_mnist", "GaussianRandomField", "LogNormalField", "ThresholdedField", "DarcyFlow",
    "dataset_from_dict",
    # training
    "MultilevelSchedule", "hierarchy", "mlmc_loss", "RunConfig", "ConfigError", "load_config",
    "train", "train_from_config", "load_run", "EMA", "TrainingDiverged",
    "save_checkpoint", "load_checkpoint", "CheckpointError",
    # evaluation
    "metrics", "points", "evaluate_invariance",
    # Score Neural Operator
    "ScoreNeuralOperator", "KernelMeanEmbedding", "prototype_encoding", "GaussianMixture", "GMMFamily",
    "SNOTrainConfig", "train_sno", "sno_point_score", "relative_score_error",
    # kernel score models and nonlinear DSM
    "EmpiricalKernelScore", "WPOKernelScore", "train_wpo", "NDSM", "ReferenceMixture", "fit_reference_mixture",
]
