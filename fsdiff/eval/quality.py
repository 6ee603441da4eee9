"""Sample quality of image models at any resolution, against real-data floors measured the same way.

Measures that a consistently bad model cannot pass by being consistently bad:

* ``confident``: fraction of samples that an *independent* classifier
  (:mod:`fsdiff.eval.classifier`, trained on real images only) assigns a class with probability >= 0.9,
  next to ``confident_real``, the same fraction for the real test images;
* ``entropy``: entropy of the histogram of predicted classes divided by ``log(classes)``
  (1 = every class equally often; a model that draws only "1"s scores 0);
* ``fd``: Fréchet distance of classifier features against a reference set of real test images,
  next to ``fd_floor``, the same distance for ``n`` *real* training images (same n, same features:
  the Fréchet distance is biased upward at small n, so only the ratio ``fd / fd_floor`` is fair);
* ``power_beyond``: fraction of the samples' power on modes with ``max_i |k_i| > K`` (``K = 13``:
  the band MNIST has), which must be ~0 for band-limited data at every resolution;
* ``band_power``: mean power per band of max-norm ``|k|`` relative to the real data's.

Every input is brought to the classifier's 28-grid by Fourier restriction
(:func:`fsdiff.eval.classifier.to_classifier_grid`), so the figures of samples drawn at 56² or 112² are
comparable with those at 28².
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from .classifier import classifier_features, load_or_train_classifier, to_classifier_grid
from .._paths import PRETRAINED_DIR
from ..grid import Grid
from .metrics import frechet_distance

__all__ = ["band_power", "power_fraction_beyond", "ImageQuality", "CLASSIFIER_DIR", "CONFIDENCE"]

#: classifiers shipped with the repository (trained by :func:`fsdiff.eval.classifier.load_or_train_classifier`)
CLASSIFIER_DIR = PRETRAINED_DIR / "classifiers"
CONFIDENCE = 0.9


def _maxnorm_k(grid: Grid) -> torch.Tensor:
    """``max_i |k_i|`` of every rfft entry, int64 ``rfft_shape``."""
    out = torch.zeros(grid.rfft_shape, dtype=torch.int64)
    for k in grid.wavenumbers:
        out = torch.maximum(out, k.abs().expand(grid.rfft_shape))
    return out


def band_power(x: torch.Tensor, grid: Grid, edges: Sequence[float]) -> torch.Tensor:
    """Mean power per sample in bands ``edges[j] <= max_i |k_i| < edges[j + 1]``: ``(len(edges) - 1,)`` float64.

    Power of a mode is ``|D| |u_hat_k|²`` (Parseval: the bands add up to ``E||u||²``), summed over the
    kept modes of the band on ``grid`` and averaged over samples and channels. A band the grid does
    not reach is 0.
    """
    grid.check(x, "x", min_leading=2)
    p = grid.rfft(x.detach().double()).abs().square().mean(dim=(0, 1)) * grid.volume * grid.rfft_weights * grid.mode_mask
    kmax = _maxnorm_k(grid)
    out = [float(p[(kmax >= lo) & (kmax < hi)].sum()) for lo, hi in zip(edges[:-1], edges[1:])]
    return torch.tensor(out, dtype=torch.float64)


def power_fraction_beyond(x: torch.Tensor, grid: Grid, K: int = 13) -> float:
    """Fraction of the mean power of ``x (n, C, *grid.shape)`` on modes with ``max_i |k_i| > K``."""
    bp = band_power(x, grid, [0, K + 1, math.inf])
    total = float(bp.sum())
    return float(bp[1]) / total if total > 0 else 0.0


class ImageQuality:
    """Quality figures of image samples on any 2-D grid of the unit square for MNIST / Fashion-MNIST.

    Parameters
    ----------
    kind : ``"mnist"`` or ``"fashion-mnist"``
    data_root : directory of the IDX files (default ``FSDIFF_DATA_DIR``)
    classifier_dir : where the classifier is cached (default: the one shipped in ``pretrained/classifiers``)
    n_reference : real test images whose classifier features are the reference Gaussian
    """

    def __init__(self, kind: str = "mnist", data_root=None, classifier_dir: str | Path | None = None,
                 n_reference: int = 10000):
        from ..data.mnist import load_mnist

        self.kind = kind
        self.classifier, self.record = load_or_train_classifier(kind, cache_dir=classifier_dir or CLASSIFIER_DIR,
                                                                data_root=data_root)
        self.grid28 = Grid((28, 28))
        test, self.test_labels = load_mnist("test", root=data_root, kind=kind, limit=n_reference)
        self._data_root = data_root
        self._train_images: torch.Tensor | None = None
        self.reference = classifier_features(self.classifier, test, self.grid28)
        #: the ``confident`` figure of the real test images: the level a perfect sampler reaches
        self.confident_real = float((self.probabilities(test, self.grid28).max(-1).values >= CONFIDENCE).double().mean())
        self._floors: dict[int, float] = {}
        self._real_bands: dict = {}

    @property
    def _train(self) -> torch.Tensor:
        """The training images ``(60000, 1, 28, 28)``, read on first use (floors and real band power only)."""
        if self._train_images is None:
            from ..data.mnist import load_mnist

            self._train_images = load_mnist("train", root=self._data_root, kind=self.kind)[0]
        return self._train_images

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Class probabilities ``(n, classes)`` of samples ``(n, 1, *grid.shape)``."""
        z = to_classifier_grid(x, grid)
        return torch.cat([self.classifier(z[i:i + 1000]).softmax(-1) for i in range(0, len(z), 1000)])

    def floor(self, n: int, seed: int = 0) -> float:
        """Fréchet distance of ``n`` real training images (seeded subset) to the reference set."""
        if n not in self._floors:
            idx = torch.randperm(len(self._train), generator=torch.Generator().manual_seed(seed))[:n]
            feats = classifier_features(self.classifier, self._train[idx], self.grid28)
            self._floors[n] = frechet_distance(feats, self.reference)
        return self._floors[n]

    def real_band_power(self, grid: Grid, edges: Sequence[float], n: int = 2000) -> torch.Tensor:
        """:func:`band_power` of ``n`` real training images served (band-limited) on ``grid``."""
        from ..data.mnist import mnist_on_grid

        key = (grid, tuple(edges), n)
        if key not in self._real_bands:
            self._real_bands[key] = band_power(mnist_on_grid(self._train[:n], grid), grid, edges)
        return self._real_bands[key]

    def evaluate(self, x: torch.Tensor, grid: Grid, edges: Sequence[float] = (0, 4, 7, 10, 14)) -> dict:
        """All figures for samples ``x (n, 1, *grid.shape)``, ``n >= 2``, as a plain dict.

        ``band_ratio`` is the samples' :func:`band_power` over the real images' on the same grid
        (bands of max-norm ``|k|`` with the given edges).
        """
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 samples to measure quality; got {x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ValueError("samples contain non-finite values")
        p = self.probabilities(x, grid)
        conf, cls = p.max(-1)
        hist = torch.bincount(cls, minlength=p.shape[1]).double() / len(cls)
        nz = hist[hist > 0]
        entropy = float(-(nz * nz.log()).sum() / math.log(p.shape[1]))
        n = x.shape[0]
        fd = frechet_distance(classifier_features(self.classifier, x, grid), self.reference)
        floor = self.floor(n)
        ratio = band_power(x, grid, edges) / self.real_band_power(grid, edges).clamp_min(1e-300)
        return {
            "n": n, "grid": grid.shape[0], "confident": float((conf >= CONFIDENCE).double().mean()),
            "confident_real": self.confident_real,
            "entropy": entropy, "fd": fd, "fd_floor": floor, "fd_ratio": fd / floor,
            "power_beyond_13": power_fraction_beyond(x, grid, 13),
            "band_edges": list(edges), "band_ratio": [float(v) for v in ratio],
            "class_histogram": [float(v) for v in hist],
        }


def sample_and_evaluate(model, sde, quality: ImageQuality, resolutions: Sequence[int], n: int = 256,
                        sampler: str = "auto", steps: int = 24, time_grid: str = "edm", seed: int = 0,
                        chunk_size: int | None = 64, progress: bool = False) -> tuple[list[dict], dict]:
    """Sample ``model`` at each ``N x N`` of ``resolutions`` (one seed: nested draws) and measure it.

    Returns ``(rows, samples)``: one :meth:`ImageQuality.evaluate` dict per resolution, extended with
    ``sampler``, ``steps``, ``nfe`` and ``sample_s`` (wall-clock seconds), and ``{N: (n, 1, N, N)}``.
    """
    import time

    from ..sampling import sample

    rows, samples = [], {}
    for N in resolutions:
        g = Grid((N, N))
        t0 = time.perf_counter()
        x, info = sample(model, sde, g, n, sampler=sampler, steps=steps, time_grid=time_grid,
                         generator=torch.Generator().manual_seed(seed), chunk_size=chunk_size, progress=progress,
                         return_info=True)
        row = quality.evaluate(x, g)
        row.update(sampler=info["sampler"], steps=steps, time_grid=time_grid, nfe=info["nfe"], sample_s=time.perf_counter() - t0)
        rows.append(row)
        samples[N] = x
    return rows, samples


def format_quality_table(rows: Sequence[dict], label: str = "") -> str:
    """Fixed-width text table of :func:`sample_and_evaluate` rows."""
    head = f"{'model':<22} {'N':>4} {'NFE':>4} {'conf>=0.9':>9} {'real':>5} {'entropy':>7} {'FD':>7} {'floor':>6} {'FD/floor':>8} {'P(|k|>13)':>9} {'time s':>7}"
    lines = [head]
    for r in rows:
        lines.append(f"{r.get('label', label):<22} {r['grid']:>4} {r.get('nfe', 0):>4} {r['confident']:>9.3f} {r.get('confident_real', float('nan')):>5.2f} {r['entropy']:>7.3f} "
                     f"{r['fd']:>7.2f} {r['fd_floor']:>6.2f} {r['fd_ratio']:>8.2f} {r['power_beyond_13']:>9.2e} {r.get('sample_s', 0):>7.1f}")
    return "\n".join(lines)
