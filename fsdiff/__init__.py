"""fsdiff: score-based diffusion in function space.

Functions on periodic grids (:class:`Grid`), trace-class Gaussian noise given by spectral
covariances (:mod:`fsdiff.covariance`), Hilbert-space SDEs driven by Q-Wiener noise
(:mod:`fsdiff.sde`), and score operators that learn ``Q grad log p_t`` at any resolution.
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

__version__ = "0.1.0"

__all__ = [
    "Grid", "resample", "subsample", "to_dataarray", "from_dataarray",
    "Covariance", "Matern", "LaplacianPower", "SquaredExponential", "White", "RandomSpectral",
    "SumCovariance", "ScaledCovariance", "covariance_from_dict",
    "SDE", "VPSDE", "VESDE", "sde_from_dict",
    "eta_to_qscore", "qscore_to_eta", "eta_to_x0", "x0_to_eta",
]
