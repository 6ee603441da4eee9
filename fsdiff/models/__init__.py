"""Score operators following the protocol ``model(x_t, t, grid) -> eta_hat``.

Every model exposes ``model.spec`` (plain dict with a ``"type"`` key and its constructor
arguments); :func:`build_model` rebuilds it. A checkpoint stores
``{"spec": model.spec, "state_dict": model.state_dict()}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn

from .baseline import NeuralopFNOScore
from .embedding import SinusoidalTimeEmbedding, TimeFiLM, periodic_features
from .fno_score import FNOScore
from .preconditioning import QColouredOutput, SpectralPreconditioner
from .spectral import SpectralConv
from .uno import UNOScore

__all__ = [
    "FNOScore", "NeuralopFNOScore", "SpectralConv", "SinusoidalTimeEmbedding", "TimeFiLM",
    "periodic_features", "build_model", "MODEL_TYPES", "QColouredOutput",
    "SpectralPreconditioner", "UNOScore",
]

#: ``spec["type"]`` -> model class (a fixed table, not filled at import by side effects).
MODEL_TYPES: dict[str, type[nn.Module]] = {
    "fno_score": FNOScore,
    "neuralop_fno": NeuralopFNOScore,
    "q_coloured": QColouredOutput,
    "uno_score": UNOScore,
    "spectral_precond": SpectralPreconditioner,
}


def build_model(spec: Mapping) -> nn.Module:
    """Rebuild a model from ``model.spec``.

    Raises
    ------
    ValueError
        If ``spec["type"]`` is missing or unknown, or a key is not an argument of that model.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a dict, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model type {kind!r}; expected one of {sorted(MODEL_TYPES)}")
    cls = MODEL_TYPES[kind]
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    bad = sorted(k for k in kwargs if k not in params or k == "self")
    if bad:
        allowed = sorted(k for k in params if k != "self")
        raise ValueError(f"bad key(s) {bad} for model type {kind!r}; allowed: {allowed}")
    return cls(**kwargs)
