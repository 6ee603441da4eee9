"""The demos behind ``fsdiff demo``: what fsdiff does, on built-in data, in a few minutes."""

from __future__ import annotations

import math

import os
import time
from pathlib import Path
from typing import Sequence

import torch

from .._paths import CONFIGS_DIR, PRETRAINED_DIR
from .._seeds import REFERENCE, derived
from ..covariance import Covariance, Matern, White
from ..grid import Grid, to_dataarray
from ..io import write_json, write_netcdf

__all__ = ["noise_demo", "train_sample_demo", "default_config_path"]


def noise_demo(
    out_dir: str | os.PathLike,
    resolutions: Sequence[int] = (32, 64, 128, 256),
    n: int = 256,
    seed: int = 0,
    covariance: Covariance | None = None,
) -> dict:
    """Trace-class vs white noise at several resolutions, drawn with one seed.

    Writes ``noise_<N>.nc`` (dims sample, channel, x, y), ``noise.png`` (the same random
    function at every resolution, beside white noise) and ``noise_table.json``. Returns the
    table: per resolution, mean pointwise variance and mean squared L² norm of both kinds.
    """
    import xarray as xr

    from ..plotting import field_panels, save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cov = covariance or Matern(alpha=2.0, tau=3.0).with_pointwise_variance(1.0, ndim=2)
    white = White()
    table: dict[str, dict] = {}
    panels_c, panels_w = [], []
    for N in resolutions:
        g = Grid((N, N))
        u = cov.sample(g, n, generator=torch.Generator().manual_seed(seed))
        w = white.sample(g, n, generator=torch.Generator().manual_seed(seed))
        attrs = {"seed": seed, "resolution": N}
        ds = xr.Dataset({
            "trace_class": to_dataarray(u, g, "trace_class", {**attrs, "covariance": repr(cov)}),
            "white": to_dataarray(w, g, "white", {**attrs, "covariance": repr(white)}),
        })
        write_netcdf(out / f"noise_{N}.nc", ds)
        table[str(N)] = {
            "trace_class_pointwise_var": float(u.var(dim=0).mean()),
            "trace_class_l2_norm_sq": float(g.norm(u).square().mean()),
            "trace_class_expected_pointwise_var": cov.pointwise_variance(g),
            "white_pointwise_var": float(w.var(dim=0).mean()),
            "white_l2_norm_sq": float(g.norm(w).square().mean()),
        }
        panels_c.append((f"{N}×{N}", u[0, 0], g))
        panels_w.append((f"{N}×{N}", w[0, 0], g))
    fig = field_panels([("trace class (Matérn)", panels_c), ("white noise", panels_w)], shared_color=False)
    fig.suptitle(f"One seed ({seed}) at four resolutions: the trace-class sample is one function", fontsize=10, y=1.02)
    save_figure(fig, out / "noise.png")
    write_json(out / "noise_table.json", table)
    return table


def format_noise_table(table: dict) -> str:
    """The noise table as aligned text."""
    lines = [f"{'N':>5} | {'trace-class var':>15} {'(exact)':>9} {'||u||²':>8} | {'white var':>10} {'||w||²':>10}"]
    for N, row in table.items():
        lines.append(
            f"{N:>5} | {row['trace_class_pointwise_var']:>15.4f} {row['trace_class_expected_pointwise_var']:>9.4f} "
            f"{row['trace_class_l2_norm_sq']:>8.4f} | {row['white_pointwise_var']:>10.1f} {row['white_l2_norm_sq']:>10.1f}"
        )
    return "\n".join(lines)



def default_config_path(data: str = "synthetic") -> Path:
    """The example config shipped in the repository's ``configs/`` folder."""
    name = {"synthetic": "synthetic.toml", "mnist": "mnist.toml", "fashion-mnist": "fashion_mnist.toml"}.get(data)
    if name is None:
        raise ValueError(f"unknown demo data {data!r}; expected synthetic, mnist or fashion-mnist")
    path = CONFIGS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the demo from a source checkout or pass --config")
    return path


def _fresh_run_dir(run_dir: Path) -> None:
    """Remove a previous demo run (only if it is an fsdiff run directory)."""
    import shutil

    if run_dir.exists():
        if not (run_dir / "config.toml").is_file():
            raise FileExistsError(f"{run_dir} exists and is not an fsdiff run directory; choose another --out")
        shutil.rmtree(run_dir)


def train_sample_demo(
    out_dir: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    data: str = "synthetic",
    overrides: Sequence[str] = (),
    factors: Sequence[int] = (1, 2, 4),
    n: int = 32,
    sampler: str = "auto",
    steps: int = 24,
    seed: int = 0,
    progress: bool = True,
    time_grid: str = "edm",
) -> dict:
    """Train a small score operator (multilevel), sample at 1x, 2x, 4x the training resolution, compare with truth.

    Besides energy MMD, spectrum error and point-value distance, every resolution gets the
    generated/true power in bands of max-norm ``|k|`` against the training grid's highest mode K:
    ``low`` (``|k| < K/2``), ``mid`` (``K/2 <= |k| <= K``) and ``beyond`` (``|k| > K``, only on finer grids).

    Writes ``run/`` (config, checkpoints, metrics, loss curve), ``samples_<N>.nc`` and PNGs,
    ``demo.png`` (ground truth and generated functions per resolution, with radially averaged
    spectra) and ``metrics.json``. Returns the metrics per resolution.
    """
    import matplotlib.pyplot as plt

    from ..config import load_config
    from ..data import dataset_from_dict
    from .generate import sample_run
    from ..eval.metrics import energy_mmd, pointwise_value_distance, radial_spectrum, spectrum_error
    from ..plotting import plot_field, save_figure
    from ..training import load_run, train_from_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config_path or default_config_path(data), overrides)
    run_dir = out / "run"
    _fresh_run_dir(run_dir)
    t0 = time.perf_counter()
    train_from_config(cfg, run_dir, progress=progress)
    train_seconds = time.perf_counter() - t0
    model, sde, grid, cfg = load_run(run_dir)
    dataset = dataset_from_dict(cfg.data.spec())
    channels = int(getattr(dataset, "channels", 1))
    shapes = [tuple(f * s for s in grid.shape) for f in factors]
    t0 = time.perf_counter()
    generated, run_info = sample_run(model, sde, grid, shapes, n, channels, sampler=sampler, steps=steps, seed=seed,
                                     out=out / "samples.nc", progress=progress, time_grid=time_grid)
    sample_seconds = time.perf_counter() - t0

    metrics: dict[str, dict] = {}
    fig, axes = plt.subplots(len(shapes), 7, figsize=(15, 2.3 * len(shapes)), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * 6 + [1.5]})
    for row, shape in enumerate(shapes):
        g = Grid(shape, grid.length)
        truth = dataset.sample(g, n, derived(seed, REFERENCE))
        x = generated[shape]
        key = "x".join(map(str, shape)) if len(set(shape)) > 1 else str(shape[0])
        metrics[key] = {
            "energy_mmd": energy_mmd(x, truth, g),
            "spectrum_error": spectrum_error(x, truth, g),
            "pointwise_value_w1": pointwise_value_distance(x, truth),
            "band_power_ratio": band_ratios(x, truth, g, grid.max_modes[0]),
        }
        # one range per row from the reference data's 1st-99th percentiles: the heavy-tailed fields
        # would otherwise give one extreme draw the whole scale and leave the others flat
        lo, hi = torch.quantile(truth.flatten()[:: max(1, truth.numel() // 1_000_000)].double(),
                                torch.tensor([0.01, 0.99], dtype=torch.float64)).tolist()
        for j in range(3):
            plot_field(axes[row, j], truth[j, 0], g, "truth" if row == 0 else "", lo, hi, "viridis")
            plot_field(axes[row, 3 + j], x[j, 0], g, "generated" if row == 0 else "", lo, hi, "viridis")
        axes[row, 0].set_ylabel(f"{key}²", fontsize=9)
        k_t, p_t = radial_spectrum(truth, g)
        k_x, p_x = radial_spectrum(x, g)
        ax = axes[row, 6]
        ax.loglog(k_t[1:], p_t[1:], label="truth")
        ax.loglog(k_x[1:], p_x[1:], "--", label="generated")
        ax.axvline(2 * torch.pi * grid.max_modes[0] / grid.length[0], color="gray", lw=0.8, ls=":")
        ax.set_title("radial spectrum" if row == 0 else "", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"trained on {grid.shape[0]}² (multilevel {cfg.multilevel.levels}), sampled at {', '.join(m + '²' for m in metrics)}; "
                 "dotted line: training grid's highest mode; colours: the data's 1st-99th percentiles", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "demo.png")
    summary = {"train_seconds": train_seconds, "sample_seconds": sample_seconds, "sampler": run_info["sampler"],
               "nfe": run_info["nfe"], "steps": steps,
               "n": n, "seed": seed, "train_resolution": list(grid.shape), "metrics": metrics}
    write_json(out / "metrics.json", summary)
    return summary


def band_ratios(x: torch.Tensor, truth: torch.Tensor, grid: Grid, K: int) -> dict:
    """Generated/true power in the bands ``|k| < K/2``, ``K/2 <= |k| <= K``, ``|k| > K`` (max-norm; absent bands omitted)."""
    from ..eval.quality import band_power

    edges = [0, math.ceil(K / 2), K + 1, math.inf]
    gen, ref = band_power(x, grid, edges), band_power(truth, grid, edges)
    names = ("low", "mid", "beyond")
    return {nm: float(a / b) for nm, a, b in zip(names, gen, ref) if b > 0}


def format_demo_table(summary: dict) -> str:
    """Metrics per resolution as aligned text (band power as generated/true)."""
    lines = [f"{'N':>6} | {'energy MMD':>10} {'spectrum err':>12} {'point W1':>9} | {'power low':>9} {'mid':>6} {'beyond':>7}"]
    for key, m in summary["metrics"].items():
        b = m.get("band_power_ratio", {})
        bands = " ".join(f"{b[k]:>{w}.2f}" if k in b else f"{'-':>{w}}" for k, w in (("low", 9), ("mid", 6), ("beyond", 7)))
        lines.append(f"{key:>6} | {m['energy_mmd']:>10.4f} {m['spectrum_error']:>12.4f} {m['pointwise_value_w1']:>9.4f} | {bands}")
    return "\n".join(lines)


#: the shipped pretrained MNIST score operator
PRETRAINED_MNIST = PRETRAINED_DIR / "mnist.pt"


def pretrained_demo(out_dir: str | os.PathLike, path: str | os.PathLike = PRETRAINED_MNIST,
                    resolutions: Sequence[int] = (28, 56, 112), n: int = 64, steps: int = 24, seed: int = 0,
                    progress: bool = True) -> dict:
    """Sample a shipped image model at several resolutions; write ``digits.png``, netCDF and a quality table.

    The figure shows the same 16 draws (one seed, nested noise) at every resolution. The quality
    figures of :class:`fsdiff.eval.quality.ImageQuality` need the MNIST test split (``FSDIFF_DATA_DIR``);
    without it only the power beyond ``|k| = 13`` is reported. Returns ``{"rows": [...], ...}``.
    """
    from .generate import sample_run
    from ..plotting import field_panels, save_figure
    from ..eval.quality import ImageQuality, power_fraction_beyond
    from ..training import load_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, sde, grid, cfg = load_run(path)
    kind = cfg.data.spec().get("kind", "mnist")
    t0 = time.perf_counter()
    shapes = [(N, N) for N in resolutions]
    xs, run_info = sample_run(model, sde, grid, shapes, n, 1, steps=steps, seed=seed, out=out / "samples.nc",
                              progress=progress, time_grid="edm", cmap="gray", chunk_size=64)
    sampler_used, nfe = run_info["sampler"], run_info["nfe"]
    seconds = time.perf_counter() - t0
    try:
        quality = ImageQuality(kind)
    except (ValueError, FileNotFoundError) as e:  # no data directory: report what needs no data
        quality, reason = None, str(e)
    rows = []
    for shape in shapes:
        g = Grid(shape)
        row = quality.evaluate(xs[shape], g) if quality is not None else {"grid": shape[0], "n": n,
                                                                          "power_beyond_13": power_fraction_beyond(xs[shape], g, 13)}
        row.update(nfe=nfe, sample_s=run_info["seconds"][shape], label=Path(path).name)
        rows.append(row)
    panels = [(f"{s[0]}²", [("", xs[s][i, 0], Grid(s)) for i in range(8)]) for s in shapes]
    fig = field_panels(panels, shared_color=True, cmap="gray", images=True)
    fig.suptitle(f"{Path(path).name}: trained at {grid.shape[0]}², the same 8 draws sampled at "
                 f"{', '.join(f'{s[0]}²' for s in shapes)} ({sampler_used}, {nfe} evaluations)", fontsize=10)
    save_figure(fig, out / "digits.png")
    summary = {"model": str(path), "rows": rows, "sample_seconds": seconds, "n": n, "steps": steps,
               "quality_unavailable": None if quality is not None else reason}
    write_json(out / "quality.json", summary)
    return summary
