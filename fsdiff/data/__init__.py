"""Function data sets: MNIST / Fashion-MNIST readers, double digits, and synthetic fields with ground truth.

Every data set keeps one protocol (see :mod:`fsdiff.data.base`): ``channels``,
``sample(grid, n, generator)``, ``materialize(grid, n, seed)``, ``to_dict()`` and
:func:`dataset_from_dict`.
"""

from .base import FunctionDataset
from .double_digits import CLASS_NAMES, DOUBLE_GRID, DoubleDigits, held_out_classes
from .mnist import (
    MNIST,
    DATA_ENV_VAR,
    MNIST_GRID,
    data_root,
    download_mnist,
    load_mnist,
    mnist_on_grid,
    read_idx,
    verify_file,
)
from .registry import DATASET_TYPES, dataset_from_dict
from .synthetic import (
    DarcyFlow,
    GaussianRandomField,
    LogNormalField,
    ThresholdedField,
    band_limited_sample,
    darcy_forcing,
    solve_darcy,
)

__all__ = [
    "FunctionDataset", "MNIST", "DoubleDigits", "dataset_from_dict", "DATASET_TYPES",
    "DOUBLE_GRID", "CLASS_NAMES", "held_out_classes",
    "DATA_ENV_VAR", "MNIST_GRID", "data_root", "download_mnist", "load_mnist", "mnist_on_grid",
    "read_idx", "verify_file",
    "GaussianRandomField", "LogNormalField", "ThresholdedField", "DarcyFlow",
    "band_limited_sample", "darcy_forcing", "solve_darcy",
]
