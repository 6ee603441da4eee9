"""Evaluation: resolution-aware sample metrics, the independent image classifier, the
discretisation-invariance harness and image sample quality against real-data floors."""

from . import metrics
from .invariance import evaluate_invariance
from .quality import ImageQuality, sample_and_evaluate

__all__ = ["metrics", "evaluate_invariance", "ImageQuality", "sample_and_evaluate"]
