"""The discretisation-invariance harness: one trained model, evaluated at many resolutions.

:func:`evaluate_invariance` loads a run (:func:`fsdiff.training.load_run`), and at each
resolution ``N`` (grid ``N^d`` on the run's domain):

1. **DSM validation loss** on a fixed validation batch (data, times and noise drawn once, on
   the finest requested grid, from the run's ``training.val_seed``, and Fourier-restricted to
   every coarser grid, so all resolutions see the same functions and the same noise);
2. **samples**: ``n_samples`` draws with the given sampler; the generator is re-seeded with
   ``seed`` at every resolution, so the prior draws and the injected noise are nested (the
   same random functions at every resolution, Fourier-restricted);
3. **reference data at that resolution** (``n_reference`` items, seed ``seed + 1`` at every
   resolution, hence nested too): for synthetic sets, true samples of the run's data set
   rendered on that grid (exact, they are functions with closed form); for MNIST, the
   training images served by :func:`fsdiff.data.mnist.mnist_on_grid`, i.e. band-limited
   Fourier interpolation (up) or truncation (down) of the 28² image with the 28-grid's
   Nyquist mode dropped, unclamped;
4. every metric of :mod:`fsdiff.eval.metrics` between samples and reference (see ``METRICS``),
   plus the classifier Fréchet distance for MNIST-like data (:mod:`fsdiff.eval.classifier`,
   which resizes to 28² by the same Fourier protocol);
5. **error per spectral band** (:func:`band_powers`): the mean power of samples and reference
   in bands of the max-norm wavenumber relative to the training grid's Nyquist number
   ``K = N_train / 2`` -- ``low`` (``|k| < K/2``), ``mid`` (``K/2 <= |k| < K``) and ``beyond``
   (``|k| >= K``: modes the model never saw in training; NaN where the grid has none) -- and
   the error ``|P_gen - P_ref| / (total reference power)`` per band. (A log-spectrum error is
   not used per band: band-limited data such as MNIST or the synthetic sets have ~zero power
   at high modes, where log ratios are dominated by round-off.)

The result is an ``xarray.Dataset`` (dims ``resolution``, ``metric``, ``band``, ``shell``),
written to ``<out_dir>/invariance.nc`` (scipy engine, atomic) with a figure
``invariance.png`` (metrics against resolution) and ``invariance.txt`` (the printed table).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import metrics as M
from .._seeds import PROJECTIONS, REFERENCE, derived
from ..grid import Grid
from ..io import write_netcdf, write_text

__all__ = ["METRICS", "BANDS", "band_powers", "evaluate_invariance", "resolution_metrics", "format_table", "plot_invariance"]

#: metric names (the ``metric`` coordinate), in order
METRICS = (
    "val_loss", "energy_mmd", "sliced_wasserstein", "gaussian_sliced_wasserstein", "spectrum_error",
    "fourier_frechet", "pointwise_w1", "vendi", "vendi_reference", "memorization_fraction",
    "memorization_ratio_median", "l2_norm_mean", "l2_norm_reference", "classifier_frechet",
)
#: spectral bands relative to the training grid's Nyquist wavenumber K
BANDS = ("low", "mid", "beyond")


def band_powers(x: torch.Tensor, grid: Grid, k_train: int) -> np.ndarray:
    """Mean power ``E sum_{k in band} |D| |u_hat_k|²`` of a sample set in each of ``BANDS``.

    Bands by the max-norm ``|k|_inf`` relative to ``K = k_train`` (the training grid's Nyquist
    number ``N_train / 2``): ``low`` ``< K/2``, ``mid`` ``[K/2, K)``, ``beyond`` ``>= K`` (modes
    the training grid cannot hold). By Parseval the three sum to ``E ||u||²``.
    """
    coeff = grid.rfft(x.detach().to(torch.float64))
    power = coeff.abs().square().mean(dim=(0, 1)) * grid.volume * grid.rfft_weights * grid.mode_mask
    kinf = torch.zeros(grid.rfft_shape, dtype=torch.int64)
    for k in grid.wavenumbers:
        kinf = torch.maximum(kinf, k.abs().expand(grid.rfft_shape))
    edges = (0.0, k_train / 2, float(k_train), math.inf)
    return np.array([float(power[(kinf >= lo) & (kinf < hi)].sum()) for lo, hi in zip(edges, edges[1:])])


def _band_errors(gen: torch.Tensor, ref: torch.Tensor, grid: Grid, k_train: int):
    """Per band ``|P_gen - P_ref| / sum(P_ref)`` (error as a fraction of the reference's total power),
    the band powers of both sets, and both radial spectra over the grid's complete shells."""
    bg, br = band_powers(gen, grid, k_train), band_powers(ref, grid, k_train)
    err = np.abs(bg - br) / br.sum()
    if grid.shape[0] // 2 <= k_train:  # no mode beyond the training grid's
        err[2] = np.nan
    _, pg = M.radial_spectrum(gen, grid)
    _, pr = M.radial_spectrum(ref, grid)
    return err, bg, br, pg.numpy(), pr.numpy()


def _classifier_for(dataset: Any, classifier: Any):
    """``None`` unless the data are MNIST-like; ``"auto"`` loads (or trains once) the cached classifier."""
    if classifier is None or getattr(dataset, "type_name", None) != "mnist":
        return None
    if classifier == "auto":
        from .classifier import load_or_train_classifier

        return load_or_train_classifier(kind=dataset.kind, data_root=dataset.root)[0]
    return classifier


def resolution_metrics(x: torch.Tensor, y: torch.Tensor, grid: Grid, classifier: Any = None,
                       n_projections: int = 64, seed: int = 0) -> dict:
    """Every figure of :data:`METRICS` but ``val_loss`` for samples ``x`` against reference ``y`` on ``grid``.

    ``x (n, C, *grid.shape)``, ``y (m, C, *grid.shape)`` float64; the sliced metrics draw their
    directions from ``seed + PROJECTIONS``; ``classifier_frechet`` is NaN without a classifier.
    """
    def directions() -> torch.Generator:
        return derived(seed, PROJECTIONS)

    mem = M.memorization(x, y, grid)
    return {
        "energy_mmd": M.energy_mmd(x, y, grid),
        "sliced_wasserstein": M.sliced_wasserstein(x, y, grid, n_projections, generator=directions()),
        "gaussian_sliced_wasserstein": M.gaussian_sliced_wasserstein(x, y, grid, n_projections, generator=directions()),
        "spectrum_error": M.spectrum_error(x, y, grid),
        "fourier_frechet": M.fourier_frechet_distance(x, y, grid, max_mode=min(4, grid.max_modes[0])),
        "pointwise_w1": M.pointwise_value_distance(x, y),
        "vendi": M.vendi_score(x, grid),
        "vendi_reference": M.vendi_score(y, grid),
        "memorization_fraction": mem.fraction,
        "memorization_ratio_median": float(mem.ratios.median()),
        "l2_norm_mean": float(grid.norm(x).mean()),
        "l2_norm_reference": float(grid.norm(y).mean()),
        "classifier_frechet": (M.frechet_distance(*[_clf_feats(classifier, z, grid) for z in (x, y)])
                               if classifier is not None else math.nan),
    }


def _to_dataset(res: Sequence[int], grids: Sequence[Grid], measured: list, attrs: dict) -> Any:
    """The harness's ``xarray.Dataset`` from one ``(row, band errors or None, seconds)`` per resolution."""
    import xarray as xr

    n_shell = max(M._shell_index(g)[2] for g in grids)
    vals = np.full((len(res), len(METRICS)), np.nan)
    bands, bpow_g, bpow_r = (np.full((len(res), len(BANDS)), np.nan) for _ in range(3))
    spec_g, spec_r = np.full((len(res), n_shell), np.nan), np.full((len(res), n_shell), np.nan)
    secs = np.zeros(len(res))
    for i, (row, band, seconds) in enumerate(measured):
        secs[i] = seconds
        vals[i] = [row.get(m, math.nan) for m in METRICS]
        if band is not None:
            bands[i], bpow_g[i], bpow_r[i], pg, pr = band
            spec_g[i, : len(pg)], spec_r[i, : len(pr)] = pg, pr
    return xr.Dataset(
        {
            "metrics": (("resolution", "metric"), vals),
            "band_error": (("resolution", "band"), bands),
            "band_power_generated": (("resolution", "band"), bpow_g),
            "band_power_reference": (("resolution", "band"), bpow_r),
            "spectrum_generated": (("resolution", "shell"), spec_g),
            "spectrum_reference": (("resolution", "shell"), spec_r),
            "sample_seconds": (("resolution",), secs),
        },
        coords={"resolution": np.array(res, dtype=np.int64), "metric": list(METRICS), "band": list(BANDS),
                "shell": np.arange(n_shell, dtype=np.int64)},
        attrs=attrs,
    )


def evaluate_invariance(
    run_dir_or_ckpt: str | os.PathLike,
    resolutions: Sequence[int],
    n_samples: int = 64,
    sampler: str = "em",
    steps: int = 100,
    seed: int = 0,
    reference: Any = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    n_reference: int | None = None,
    n_val: int | None = None,
    chunk_size: int | None = 32,
    classifier: Any = "auto",
    n_projections: int = 64,
    label: str | None = None,
) -> Any:
    """Sample a trained run at every resolution and compare with reference data there.

    Parameters
    ----------
    run_dir_or_ckpt : a run directory (latest checkpoint) or a checkpoint file.
    resolutions : points per axis, e.g. ``[16, 32, 64, 128]`` (grid ``N^d`` on the run's domain).
    n_samples, sampler, steps : generated samples per resolution and the sampler
        (:func:`fsdiff.sampling.sample`).
    seed : sampler seed (the same at every resolution: nested draws); reference data use
        ``seed + REFERENCE``, the sliced-Wasserstein directions ``seed + PROJECTIONS`` (:mod:`fsdiff._seeds`).
    reference : a data set object (``sample(grid, n, generator)``); default: the run's data set.
    out_dir : write ``invariance.nc``, ``invariance.png`` and ``invariance.txt`` there.
    n_reference : reference items per resolution (default ``max(n_samples, 64)``).
    n_val : validation batch size (default the run's ``training.n_val``).
    classifier : ``"auto"`` (MNIST-like data: the cached :mod:`fsdiff.eval.classifier` model),
        a ``SmallCNN``, or None (no classifier Fréchet distance).
    label : a name stored in the attributes and figure title.

    Returns
    -------
    xarray.Dataset with ``metrics (resolution, metric)``, ``band_error (resolution, band)``,
    ``spectrum_generated`` / ``spectrum_reference (resolution, shell)`` (NaN beyond a grid's
    complete shells) and ``sample_seconds (resolution)``.
    """
    from ..data import dataset_from_dict
    from ..training.multilevel import ValidationSet
    from ..sampling import sample
    from ..training import load_run

    res = sorted({int(r) for r in resolutions})
    if not res or res[0] < 4:
        raise ValueError(f"resolutions must be integers >= 4; got {list(resolutions)}")
    if not (isinstance(n_samples, int) and n_samples >= 2):
        raise ValueError(f"n_samples must be an integer >= 2; got {n_samples!r}")
    path = Path(run_dir_or_ckpt)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected an fsdiff run directory or checkpoint)")
    if path.is_dir() and not (path / "checkpoints").is_dir():
        raise FileNotFoundError(f"{path} is not an fsdiff run directory: it has no checkpoints/ folder "
                                "(train one with `fsdiff train` or fsdiff.training.train_from_config)")
    model, sde, train_grid, cfg = load_run(path)
    dataset = reference if reference is not None else dataset_from_dict(cfg.data.spec())
    channels = int(getattr(dataset, "channels", 1))
    n_ref = int(n_reference or max(n_samples, 64))
    n_val = int(n_val or cfg.training.n_val)
    grids = [train_grid.with_shape((N,) * train_grid.ndim) for N in res]
    k_train = train_grid.shape[0] // 2
    clf = _classifier_for(dataset, classifier)
    say = print if progress else (lambda *a, **k: None)

    val = ValidationSet(dataset, grids, sde, n_val, cfg.training.val_seed, "uniform", cfg.training.eps)
    with torch.no_grad():
        val_losses = val.losses(model, cfg.training.weighting, chunk=chunk_size or 32)

    measured = []
    for i, (N, g) in enumerate(zip(res, grids)):
        t0 = time.perf_counter()
        with torch.no_grad():
            x = sample(model, sde, g, n_samples, channels, sampler=sampler, steps=steps, eps=cfg.training.eps,
                       generator=torch.Generator().manual_seed(int(seed)), chunk_size=chunk_size)
        seconds = time.perf_counter() - t0
        x = x.double()
        if not torch.isfinite(x).all():
            say(f"  {N}: samples are not finite; metrics set to NaN")
            measured.append(({"val_loss": val_losses[i]}, None, seconds))
            continue
        y = dataset.sample(g, n_ref, generator=derived(seed, REFERENCE)).double()
        row = {"val_loss": val_losses[i], **resolution_metrics(x, y, g, clf, n_projections, seed)}
        measured.append((row, _band_errors(x, y, g, k_train), seconds))
        say(f"  {N}^{g.ndim}: sampled {n_samples} in {seconds:.1f} s; energy MMD {row['energy_mmd']:.4g}, "
            f"val loss {row['val_loss']:.4g}")

    attrs = {
        "run": str(path), "label": label or cfg.name, "sampler": sampler, "steps": int(steps), "seed": int(seed),
        "n_samples": int(n_samples), "n_reference": n_ref, "n_val": n_val,
        "train_resolution": int(train_grid.shape[0]), "ndim": int(train_grid.ndim),
        "sde": repr(sde), "model": str(getattr(model, "spec", {}).get("type", type(model).__name__)),
        "reference": _reference_note(dataset),
        "bands": "max-norm |k| relative to K = N_train/2: low < K/2, mid [K/2, K), beyond >= K (modes the training "
                 "grid cannot hold); band_error = |P_gen - P_ref| in the band / total reference power",
    }
    ds = _to_dataset(res, grids, measured, attrs)
    table = format_table(ds)
    say(table)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_netcdf(out / "invariance.nc", ds)
        plot_invariance(ds, out / "invariance.png")
        write_text(out / "invariance.txt", table + "\n")
    return ds


def _clf_feats(clf, x: torch.Tensor, grid: Grid) -> torch.Tensor:
    from .classifier import classifier_features

    return classifier_features(clf, x.float(), grid)


def _reference_note(dataset: Any) -> str:
    if getattr(dataset, "type_name", None) == "mnist":
        return ("MNIST training images served at each resolution by band-limited Fourier resampling of the 28x28 "
                "image (Nyquist mode dropped; interpolation up, truncation down; unclamped)")
    spec = dataset.to_dict() if hasattr(dataset, "to_dict") else {}
    return f"true samples of the data set {spec.get('type', type(dataset).__name__)} rendered at each resolution"


#: columns of the printed table
_TABLE = ("val_loss", "energy_mmd", "sliced_wasserstein", "spectrum_error", "pointwise_w1", "vendi",
          "memorization_fraction", "classifier_frechet")


def format_table(ds: Any) -> str:
    """Metrics against resolution as aligned text (selected metrics and the band errors)."""
    cols = [c for c in _TABLE if not np.all(np.isnan(ds["metrics"].sel(metric=c).values))]
    head = f"{'N':>5} " + " ".join(f"{c[:12]:>12}" for c in cols) + " | " + " ".join(f"{b:>7}" for b in BANDS)
    lines = [f"{ds.attrs.get('label', '')}: trained at {ds.attrs.get('train_resolution')}, "
             f"{ds.attrs.get('sampler')} {ds.attrs.get('steps')} steps, n={ds.attrs.get('n_samples')}", head]
    for N in ds["resolution"].values:
        m = ds["metrics"].sel(resolution=N)
        b = ds["band_error"].sel(resolution=N)
        lines.append(f"{int(N):>5} " + " ".join(f"{float(m.sel(metric=c)):>12.4g}" for c in cols) + " | "
                     + " ".join(f"{float(b.sel(band=k)):>7.3f}" for k in BANDS))
    return "\n".join(lines)


def plot_invariance(ds: Any, path: str | os.PathLike, others: Sequence[Any] = ()) -> Path:
    """Panels of metric against resolution (log2 axis) for one or several result Datasets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plotting import save_figure

    sets = [ds, *others]
    panels = ["val_loss", "energy_mmd", "sliced_wasserstein", "spectrum_error", "pointwise_w1", "vendi"]
    if any(not np.all(np.isnan(d["metrics"].sel(metric="classifier_frechet").values)) for d in sets):
        panels.append("classifier_frechet")
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5))
    axes = axes.ravel()
    for ax, name in zip(axes, panels):
        for d in sets:
            ax.plot(d["resolution"].values, d["metrics"].sel(metric=name).values, "o-", label=d.attrs.get("label"))
        if name == "vendi":
            for d in sets:
                ax.plot(d["resolution"].values, d["metrics"].sel(metric="vendi_reference").values, "k:", lw=1)
        ax.set_title(name + (" (dotted: reference)" if name == "vendi" else ""), fontsize=9)
        ax.set_xscale("log", base=2)
        ax.axvline(ds.attrs.get("train_resolution", np.nan), color="grey", ls="--", lw=0.8)
    ax = axes[len(panels)]
    for d in sets:
        for k, style in zip(BANDS, ("o-", "s--", "^:")):
            ax.plot(d["resolution"].values, d["band_error"].sel(band=k).values, style, label=f"{d.attrs.get('label')} {k}")
    ax.set_xscale("log", base=2)
    ax.set_title("|power error| per band / total power (vs training Nyquist)", fontsize=9)
    ax.legend(fontsize=6)
    for a in axes[len(panels) + 1:]:
        a.axis("off")
    axes[0].legend(fontsize=7)
    for a in axes[: len(panels) + 1]:
        a.set_xlabel("resolution N (N² grid)", fontsize=8)
    fig.suptitle(f"discretisation invariance; dashed line: training resolution", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
