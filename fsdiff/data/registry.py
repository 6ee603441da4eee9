"""``dataset_from_dict``: the one table from a data set's ``type`` key to its class."""

from __future__ import annotations

from .base import FunctionDataset
from .double_digits import DoubleDigits
from .mnist import MNIST
from .synthetic import DarcyFlow, GaussianRandomField, LogNormalField, ThresholdedField

__all__ = ["DATASET_TYPES", "dataset_from_dict"]

#: ``type`` key -> class, for every data set :func:`dataset_from_dict` can rebuild
DATASET_TYPES: dict[str, type[FunctionDataset]] = {
    c.type_name: c for c in (GaussianRandomField, LogNormalField, ThresholdedField, DarcyFlow, MNIST, DoubleDigits)
}


def dataset_from_dict(spec: dict) -> FunctionDataset:
    """Rebuild a data set from plain data (``to_dict`` output, e.g. a TOML table).

    ``spec["type"]`` is one of ``gaussian_random_field``, ``log_normal``, ``thresholded``,
    ``darcy_flow``, ``mnist``, ``double_digits``; ``ValueError`` names an unknown type or bad parameters.
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"data set spec must be a table with a 'type' key; got {spec!r}")
    kind = spec["type"]
    if kind not in DATASET_TYPES:
        raise ValueError(f"unknown data set type {kind!r}; expected one of {sorted(DATASET_TYPES)}")
    params = {k: v for k, v in spec.items() if k != "type"}
    cls = DATASET_TYPES[kind]
    if hasattr(cls, "_from_params"):
        return cls._from_params(params)
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for data set {kind!r}: {e}") from None
