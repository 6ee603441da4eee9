"""Diffusion of points in R^d (Q = I): the finite-dimensional methods next to the function-space core.

* :mod:`~fsdiff.points.diffusion` -- perturbing and sampling points with an fsdiff SDE's schedule;
  a point score model is any ``score(x (B, d), t (B,)) -> grad log p_t(x) (B, d)`` (:data:`PointScore`);
* :mod:`~fsdiff.points.mlp` -- a small MLP score and its trainer;
* :mod:`~fsdiff.points.kernel` -- empirical and WPO kernel score models;
* :mod:`~fsdiff.points.ndsm` -- nonlinear denoising score matching with control variates;
* :mod:`~fsdiff.points.metrics` -- energy distance, sliced Wasserstein, memorisation of point sets;
* :mod:`~fsdiff.points.toy` -- 2-D (and 6-D) toy data sets.
"""

from .diffusion import PointScore, perturb_points, sample_points, time_grid_points
from .kernel import EmpiricalKernelScore, WPOKernelScore, ism_loss, train_wpo, tweedie_denoise
from .metrics import energy_distance, point_memorization, sliced_wasserstein
from .mlp import MLPScore, train_score
from .ndsm import NDSM, ReferenceMixture, fit_reference_mixture, ndsm_loss, ndsm_sample, point_dsm_loss
from .toy import moons, swiss_roll, toy_data

__all__ = [
    "PointScore", "perturb_points", "sample_points", "time_grid_points",
    "EmpiricalKernelScore", "WPOKernelScore", "ism_loss", "train_wpo", "tweedie_denoise",
    "energy_distance", "sliced_wasserstein", "point_memorization",
    "MLPScore", "train_score",
    "NDSM", "ReferenceMixture", "fit_reference_mixture", "ndsm_loss", "ndsm_sample", "point_dsm_loss",
    "moons", "swiss_roll", "toy_data",
]
