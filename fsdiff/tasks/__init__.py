"""Task definitions built on fsdiff: Gaussian-mixture families for the Score Neural Operator.

The study driver lives in :mod:`fsdiff.tasks.gmm_study` (imported on demand: it pulls in
matplotlib and xarray).
"""

from .gmm import GaussianMixture, GMMFamily

__all__ = ["GaussianMixture", "GMMFamily"]
