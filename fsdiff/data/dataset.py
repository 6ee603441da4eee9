"""The function-data-set interface, the MNIST data set object, and the ``dataset_from_dict`` dispatcher.

Every data set is a law on functions over a periodic domain that can be rendered at any
grid:

* ``channels`` -- number of output channels;
* ``sample(grid, n, generator) -> (n, channels, *grid.shape)`` float32 -- ``n`` draws, all
  randomness from ``generator``; with the same generator state, different grids see the
  *same* underlying functions (see each class for the exact sense of "same");
* ``materialize(grid, n, seed)`` -- a fixed finite training set (a tensor to index);
* ``to_dict()`` / :func:`dataset_from_dict` -- plain-data description (TOML friendly).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..grid import Grid
from .mnist import KINDS, MNIST_GRID, SPLITS, load_mnist, mnist_on_grid

__all__ = ["FunctionDataset", "MNIST", "dataset_from_dict"]


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    return int(n)


class FunctionDataset:
    """Base class of function data sets (see the module docstring for the protocol)."""

    #: name used in :meth:`to_dict`
    kind: str = ""
    channels: int = 1

    def sample(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws rendered on ``grid``: ``(n, channels, *grid.shape)`` float32."""
        raise NotImplementedError

    def materialize(self, grid: Grid, n: int, seed: int = 0) -> torch.Tensor:
        """A fixed training set of ``n`` functions on ``grid``, ``(n, channels, *grid.shape)``.

        Equal to ``sample(grid, n, torch.Generator().manual_seed(seed))``: the same ``(n, seed)``
        gives the same functions at every resolution.
        """
        return self.sample(grid, n, torch.Generator().manual_seed(int(seed)))

    def to_dict(self) -> dict:
        """Plain-data description, inverted by :func:`dataset_from_dict`."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, spec: dict) -> "FunctionDataset":
        """Rebuild a data set from :meth:`to_dict` output (dispatches on ``spec["type"]``)."""
        return dataset_from_dict(spec)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class MNIST(FunctionDataset):
    """MNIST / Fashion-MNIST images as functions on the unit torus, served at any grid.

    ``sample`` draws images uniformly with replacement from the split (the empirical law)
    using ``generator`` and serves them at ``grid`` with :func:`fsdiff.data.mnist.mnist_on_grid`
    (Fourier resampling from the 28-grid; with ``band_limit=True`` the Nyquist row/column is
    dropped at every resolution, 28 included, so the data at two grids are exact Fourier
    restrictions of one another). ``materialize`` draws *without* replacement (a seeded subset).

    Parameters
    ----------
    split, kind, root, verify, limit : as in :func:`fsdiff.data.load_mnist` (loaded lazily).
    band_limit : drop the Nyquist modes also on the native 28-grid (default True).
    digits : keep only these labels (e.g. ``[0, 1]``), or None for all.
    """

    kind = "mnist"
    channels = 1
    native_grid = MNIST_GRID

    def __init__(
        self,
        split: str = "train",
        kind: str = "mnist",
        root: str | os.PathLike | None = None,
        verify: bool = True,
        limit: int | None = None,
        band_limit: bool = True,
        digits: list[int] | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
        self.split = split
        self.dataset = kind
        self.root = None if root is None else str(root)
        self.verify = bool(verify)
        self.limit = None if limit is None else int(limit)
        self.band_limit = bool(band_limit)
        self.digits = None if digits is None else sorted(int(d) for d in digits)
        if self.digits is not None and not all(0 <= d <= 9 for d in self.digits):
            raise ValueError(f"digits must be labels in 0..9; got {digits}")
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            x, y = load_mnist(self.split, self.root, self.dataset, verify=self.verify, limit=self.limit)
            if self.digits is not None:
                keep = torch.isin(y, torch.tensor(self.digits))
                x, y = x[keep], y[keep]
                if len(y) == 0:
                    raise ValueError(f"no {self.dataset} {self.split} images with labels {self.digits}")
            self._images, self._labels = x, y
        return self._images, self._labels  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._load()[1])

    @property
    def labels(self) -> torch.Tensor:
        """Labels of the (filtered) split, ``(N,)`` int64."""
        return self._load()[1]

    def get(self, index: torch.Tensor | slice | list[int], grid: Grid = MNIST_GRID) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``index`` served on ``grid`` and their labels: ``((n, 1, *grid.shape), (n,))``."""
        x, y = self._load()
        return mnist_on_grid(x[index], grid, self.band_limit), y[index]

    def sample(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn with replacement, ``(n, 1, *grid.shape)`` float32."""
        n = _check_n(n)
        idx = torch.randint(len(self), (n,), generator=generator)
        return self.get(idx, grid)[0]

    def materialize(self, grid: Grid, n: int, seed: int = 0) -> torch.Tensor:
        """A seeded subset of ``n`` distinct images, ``(n, 1, *grid.shape)``; ``ValueError`` if ``n > len(self)``."""
        n = _check_n(n)
        if n > len(self):
            raise ValueError(f"asked for {n} distinct images but the split has {len(self)}")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))[:n]
        return self.get(idx, grid)[0]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.kind, "split": self.split, "kind": self.dataset, "verify": self.verify,
                             "band_limit": self.band_limit}
        for key in ("root", "limit", "digits"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


def dataset_from_dict(spec: dict) -> FunctionDataset:
    """Rebuild a data set from plain data (``to_dict`` output, e.g. a TOML table).

    ``spec["type"]`` is one of ``gaussian_random_field``, ``log_normal``, ``thresholded``,
    ``darcy_flow``, ``mnist``; ``ValueError`` names an unknown type or bad parameters.
    """
    from .synthetic import DarcyFlow, GaussianRandomField, LogNormalField, ThresholdedField

    types: dict[str, type] = {
        c.kind: c for c in (GaussianRandomField, LogNormalField, ThresholdedField, DarcyFlow, MNIST)
    }
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"data set spec must be a table with a 'type' key; got {spec!r}")
    kind = spec["type"]
    if kind not in types:
        raise ValueError(f"unknown data set type {kind!r}; expected one of {sorted(types)}")
    params = {k: v for k, v in spec.items() if k != "type"}
    cls = types[kind]
    if hasattr(cls, "_from_params"):
        return cls._from_params(params)
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for data set {kind!r}: {e}") from None
