"""Conditional generation in function space with one unconditional score model, at any target grid.

* :class:`LowModes` -- super-resolution: exact conditioning on the Fourier modes a coarse grid holds;
* :class:`PointObservations` -- noisy values at scattered points;
* :class:`Mask` -- inpainting: observed pixels of an image;
* :func:`sample_conditional` -- the reverse-SDE sampler for all three (replacement for low modes,
  Gaussian-likelihood guidance through the denoised estimate for points and masks).

The rules (replacement schedule, guidance step) are stated in :mod:`fsdiff.conditional.sampler`.
"""

from .observations import LowModes, Mask, PointObservations, evaluate_at_points, evaluation_matrices
from .sampler import prior_statistics, sample_conditional

__all__ = ["LowModes", "PointObservations", "Mask", "sample_conditional", "prior_statistics",
           "evaluation_matrices", "evaluate_at_points"]
