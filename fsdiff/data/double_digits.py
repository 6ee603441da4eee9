"""Two MNIST digits side by side: a function on ``[0, 1) x [0, 2)`` (rows x columns) with 100 classes "00".."99".

The Score Neural Operator's image task (issue 14): each class is a distribution (the law of
"digit a on the left, digit b on the right"), 80 classes are seen in training and 20 are held
out, chosen so that every held-out class's left digit appears on the left and its right digit
on the right of some training class (so an unseen class is a new *combination* of seen parts).

Images are built from one MNIST split (train or test, so train and test images never mix), on the
native ``28 x 56`` grid :data:`DOUBLE_GRID` of lengths ``(1, 2)``, and served at any grid of that
domain by Fourier resampling with the Nyquist modes dropped (as :class:`~fsdiff.data.MNIST`: the
data at two grids are exact Fourier restrictions of one another). Everything is deterministic
given the seed and the generator.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from .._checks import positive_int
from ..grid import Grid, resample
from .base import FunctionDataset
from .mnist import load_mnist

__all__ = ["DoubleDigits", "DOUBLE_GRID", "CLASS_NAMES", "held_out_classes"]

#: the native grid: 28 rows, 56 columns, lengths (1, 2)
DOUBLE_GRID = Grid((28, 56), (1.0, 2.0))
#: class k is "ab" with a = k // 10 (left), b = k % 10 (right)
CLASS_NAMES = tuple(f"{a}{b}" for a in range(10) for b in range(10))


def held_out_classes(seed: int = 0, n: int = 20, among: Sequence[int] | None = None) -> list[int]:
    """``n`` held-out classes (sorted ints in 0..99), seeded; every held-out class's left digit is the
    left digit of some training class and its right digit the right digit of some training class.

    ``among``: hold out from these classes only, the rest of them being the training classes (e.g. a
    validation split of the 80 training classes); default all 100."""
    pool = list(range(100)) if among is None else sorted({int(c) for c in among})
    if not 0 <= n <= min(50, len(pool) // 2) or not all(0 <= c < 100 for c in pool):
        raise ValueError(f"n held-out classes must lie in 0..{min(50, len(pool) // 2)} of classes in 0..99; got n = {n}")
    order = [pool[i] for i in torch.randperm(len(pool), generator=torch.Generator().manual_seed(int(seed))).tolist()]
    held: list[int] = []
    for c in order:
        if len(held) == n:
            break
        trial = set(held) | {c}
        train = [k for k in pool if k not in trial]
        lefts, rights = {k // 10 for k in train}, {k % 10 for k in train}
        if all(h // 10 in lefts and h % 10 in rights for h in trial):
            held.append(c)
    return sorted(held)


class DoubleDigits(FunctionDataset):
    """Double-digit images: ``sample`` draws a class, then one image of each digit from the split.

    Parameters
    ----------
    split, kind, root, verify : as :func:`fsdiff.data.load_mnist` (loaded lazily).
    classes : ``"train"`` (the 80 seen classes), ``"held_out"`` (the 20 unseen), ``"all"``, or a
        list of class indices (0..99).
    held_out_seed, n_held_out : which classes are held out (:func:`held_out_classes`).
    """

    type_name = "double_digits"
    channels = 1
    native_grid = DOUBLE_GRID

    def __init__(self, split: str = "train", kind: str = "mnist", root: str | os.PathLike | None = None,
                 verify: bool = True, classes: str | Sequence[int] = "train", held_out_seed: int = 0,
                 n_held_out: int = 20):
        self.split, self.kind, self.verify = split, kind, bool(verify)
        self.root = None if root is None else str(root)
        self.held_out_seed, self.n_held_out = int(held_out_seed), int(n_held_out)
        self.held_out = held_out_classes(self.held_out_seed, self.n_held_out)
        if isinstance(classes, str):
            if classes not in ("train", "held_out", "all"):
                raise ValueError(f"classes must be 'train', 'held_out', 'all' or a list of ints; got {classes!r}")
            self.classes_spec: Any = classes
            chosen = {"train": [k for k in range(100) if k not in self.held_out], "held_out": self.held_out,
                      "all": list(range(100))}[classes]
        else:
            chosen = sorted(int(k) for k in classes)
            if not chosen or not all(0 <= k < 100 for k in chosen):
                raise ValueError(f"classes must be indices in 0..99; got {list(classes)}")
            self.classes_spec = chosen
        self.classes = chosen
        self._by_digit: list[torch.Tensor] | None = None
        self._images: torch.Tensor | None = None

    def _load(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self._images is None:
            x, y = load_mnist(self.split, self.root, self.kind, verify=self.verify)
            self._images = x[:, 0]
            self._by_digit = [(y == d).nonzero()[:, 0] for d in range(10)]
        return self._images, self._by_digit  # type: ignore[return-value]

    def sample_with_labels(self, grid: Grid, n: int, generator: torch.Generator | None = None,
                           classes: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images of classes drawn uniformly from ``classes`` (default: this data set's):
        ``((n, 1, *grid.shape) float32, (n,) int64 class indices)``."""
        n = positive_int(n)
        pool = torch.tensor(self.classes if classes is None else list(classes))
        labels = pool[torch.randint(len(pool), (n,), generator=generator)]
        return self.render(labels, grid, generator), labels

    def render(self, labels: torch.Tensor, grid: Grid, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random image of each class in ``labels (n,)``: ``(n, 1, *grid.shape)`` float32."""
        images, by_digit = self._load()
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if labels.numel() and (labels.min() < 0 or labels.max() > 99):
            raise ValueError(f"class indices must lie in 0..99; got {labels.tolist()}")
        out = torch.empty(labels.numel(), 28, 56)
        for side, digit in ((0, labels // 10), (1, labels % 10)):
            for d in digit.unique().tolist():
                rows = (digit == d).nonzero()[:, 0]
                pick = by_digit[d][torch.randint(len(by_digit[d]), (len(rows),), generator=generator)]
                out[rows, :, 28 * side: 28 * (side + 1)] = images[pick]
        return self.on_grid(out[:, None], grid)

    @staticmethod
    def on_grid(x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """``(..., 28, 56)`` images on ``grid`` (domain lengths (1, 2)), Nyquist modes dropped at every grid."""
        if grid.ndim != 2 or any(abs(a - b) > 1e-12 for a, b in zip(grid.length, DOUBLE_GRID.length)):
            raise ValueError(f"double digits live on [0, 1) x [0, 2); grid {grid!r} has lengths {grid.length}")
        if grid == DOUBLE_GRID:
            return DOUBLE_GRID.irfft(DOUBLE_GRID.rfft(x) * DOUBLE_GRID.mode_mask.to(x.device)).float()
        return resample(x, DOUBLE_GRID, grid).float()

    def sample(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_with_labels(grid, n, generator)[0]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.type_name, "split": self.split, "kind": self.kind, "verify": self.verify,
                             "classes": self.classes_spec, "held_out_seed": self.held_out_seed,
                             "n_held_out": self.n_held_out}
        if self.root is not None:
            d["root"] = self.root
        return d
