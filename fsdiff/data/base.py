"""The function-data-set interface.

Every data set is a law on functions over a periodic domain that can be rendered at any
grid:

* ``channels`` -- number of output channels;
* ``sample(grid, n, generator) -> (n, channels, *grid.shape)`` float32 -- ``n`` draws, all
  randomness from ``generator``; with the same generator state, different grids see the
  *same* underlying functions (see each class for the exact sense of "same");
* ``materialize(grid, n, seed)`` -- a fixed finite training set (a tensor to index);
* ``to_dict()`` / :func:`fsdiff.data.dataset_from_dict` -- plain-data description (TOML friendly),
  keyed by the class's ``type_name``.
"""

from __future__ import annotations

import torch

from ..grid import Grid

__all__ = ["FunctionDataset"]


class FunctionDataset:
    """Base class of function data sets (see the module docstring for the protocol)."""

    #: the ``type`` key of :meth:`to_dict` and :func:`fsdiff.data.dataset_from_dict`
    type_name: str = ""
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

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"
