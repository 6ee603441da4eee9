"""The Score Neural Operator: one score model for a family of distributions, each encoded as a function.

* :mod:`~fsdiff.sno.model` -- :class:`ScoreNeuralOperator` (FNO encoder of an encoding function,
  pooled to a code; a decoder that scores points given the code) and :func:`build_sno`;
* :mod:`~fsdiff.sno.embedding` -- kernel mean embeddings of samples as functions on a grid;
* :mod:`~fsdiff.sno.gmm` -- families of 2-D Gaussian mixtures with exact scores at every time;
* :mod:`~fsdiff.sno.training` -- conditional DSM, point scores for sampling, score errors.

The study driver is ``resolution_studies/sno_gmm.py``.
"""

from .embedding import KernelMeanEmbedding, prototype_encoding
from .gmm import GaussianMixture, GMMFamily
from .model import ScoreNeuralOperator, build_sno
from .training import (SNOTrainConfig, draw_encodings, generate, relative_score_error, sno_dsm_loss, sno_point_score,
                       train_point_model, train_sno)

__all__ = [
    "KernelMeanEmbedding", "prototype_encoding", "GaussianMixture", "GMMFamily", "ScoreNeuralOperator", "build_sno",
    "SNOTrainConfig", "draw_encodings", "generate", "relative_score_error", "sno_dsm_loss", "sno_point_score",
    "train_point_model", "train_sno",
]
