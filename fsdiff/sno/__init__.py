"""The Score Neural Operator: one score model for a family of distributions, each encoded as a function.

* :mod:`~fsdiff.sno.model` -- :class:`ScoreNeuralOperator` (FNO encoder of an encoding function,
  pooled to a code; a decoder that scores points given the code) and :func:`build_sno`;
* :mod:`~fsdiff.sno.embedding` -- kernel mean embeddings of samples as functions on a grid;
* :mod:`~fsdiff.sno.base_score` -- the score an embedding determines in closed form (the hybrid SNO's base);
* :mod:`~fsdiff.sno.gmm` -- families of 2-D Gaussian mixtures with exact scores at every time;
* :mod:`~fsdiff.sno.training` -- conditional DSM, point scores for sampling, score errors;
* :mod:`~fsdiff.sno.prototype_encoder` -- an FNO encoder of a class prototype (local features and a global code);
* :mod:`~fsdiff.sno.augment` -- random deformations of support images (few-shot support augmentation);
* :mod:`~fsdiff.sno.latent` -- the image task: a latent-function autoencoder of double digits,
  prototype encodings, a conditioned latent score operator and few-shot sampling.

The study drivers are ``resolution_studies/sno_gmm.py`` and ``resolution_studies/sno_mnist2.py``.
"""

from .augment import SupportAugmentation
from .base_score import KMEBaseScore, fade_weight
from .embedding import KernelMeanEmbedding, prototype_encoding
from .gmm import GaussianMixture, GMMFamily
from .latent import (LATENT_GRID, LatentAutoencoder, LatentSNOConfig, augmented_latents, build_autoencoder, encode_by_class, few_shot_sample, guided,
                     load_few_shot, prototype, recommended_augmentation, recommended_guidance, recommended_guidance_interval, sample_images, save_few_shot,
                     train_autoencoder, train_latent_sno)
from .model import ScoreNeuralOperator, build_sno
from .prototype_encoder import PrototypeEncoder, build_prototype_encoder
from .training import (SNOTrainConfig, draw_encodings, generate, relative_score_error, sno_dsm_loss, sno_point_score,
                       train_point_model, train_sno)

__all__ = [
    "KernelMeanEmbedding", "prototype_encoding", "KMEBaseScore", "fade_weight", "GaussianMixture", "GMMFamily", "ScoreNeuralOperator", "build_sno",
    "SNOTrainConfig", "draw_encodings", "generate", "relative_score_error", "sno_dsm_loss", "sno_point_score",
    "train_point_model", "train_sno",
    "LATENT_GRID", "LatentAutoencoder", "LatentSNOConfig", "build_autoencoder", "encode_by_class", "few_shot_sample",
    "prototype", "train_autoencoder", "train_latent_sno", "save_few_shot", "load_few_shot", "recommended_guidance", "recommended_guidance_interval",
    "recommended_augmentation", "augmented_latents", "sample_images", "guided", "SupportAugmentation",
    "PrototypeEncoder", "build_prototype_encoder",
]
