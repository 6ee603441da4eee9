"""Figures (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .grid import Grid  # noqa: E402

__all__ = ["save_figure", "field_panels", "plot_field", "plot_loss_curve"]


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` atomically (temp file in the same folder, then rename) and close it."""
    from .io import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return Path(path)


def plot_field(ax, u: torch.Tensor, grid: Grid, title: str = "", vmin=None, vmax=None, cmap: str = "RdBu_r",
               origin: str = "lower"):
    """Draw one function: 2-D ``(H, W)`` as an image over the physical domain, 1-D ``(N,)`` as a curve.

    ``origin="lower"`` puts ``u[0]`` at the bottom (a field over ``[0, L]²``); ``"upper"`` puts it at
    the top, the convention of image data such as MNIST.
    """
    u = u.detach().cpu().double()
    if grid.ndim == 1:
        ax.plot(grid.coords[0].numpy(), u.numpy(), lw=1)
        ax.set_xlim(0, grid.length[0])
    else:
        if grid.ndim == 3:
            u = u[..., 0]
        extent = (0, grid.length[1], 0, grid.length[0])
        ax.imshow(u.numpy(), origin=origin, extent=extent, vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def field_panels(
    rows: Sequence[tuple[str, Sequence[tuple[str, torch.Tensor, Grid]]]],
    shared_color: bool = True,
    cmap: str = "RdBu_r",
    panel_size: float = 2.2,
    images: bool = False,
):
    """A figure with one row per entry ``(row_label, [(title, field, grid), ...])``.

    Fields are single functions ``(*grid.shape)``. With ``shared_color`` each row uses one
    symmetric colour range, so the same function at several resolutions looks the same.
    ``images=True`` draws image data (MNIST): first row of pixels at the top, and the shared
    range is ``[min(0, lowest), highest]`` instead of a symmetric one, so background stays black.
    """
    n_rows = len(rows)
    n_cols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_size * n_cols, panel_size * n_rows), squeeze=False)
    for i, (label, panels) in enumerate(rows):
        if not shared_color:
            vmin = vmax = None
        elif images:
            vmin = min(0.0, min(float(f.min()) for _, f, _ in panels))
            vmax = max(float(f.max()) for _, f, _ in panels)
        else:
            vmax = max(float(f.abs().max()) for _, f, _ in panels)
            vmin = -vmax
        for j, (title, field, grid) in enumerate(panels):
            plot_field(axes[i, j], field, grid, title, vmin, vmax, cmap, origin="upper" if images else "lower")
        for j in range(len(panels), n_cols):
            axes[i, j].axis("off")
        axes[i, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


def line_plot(x: dict[str, np.ndarray], y: dict[str, np.ndarray], xlabel: str, ylabel: str, title: str = "",
              logx: bool = False, logy: bool = False, ax=None):
    """Several named curves on one axis; returns the figure."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name in y:
        ax.plot(x[name], y[name], marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig if fig is not None else ax.figure


def plot_loss_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss (per step, and a running mean) and validation loss per level against step, as PNG."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = [r["step"] for r in history if r.get("loss") is not None]
    losses = [r["loss"] for r in history if r.get("loss") is not None]
    if steps:
        ax.plot(steps, losses, color="0.75", lw=0.8, label="train (per step)")
        k = max(1, len(losses) // 50)
        run = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
        ax.plot(steps, run, color="k", lw=1.2, label=f"train (mean of {k})")
    val_keys = sorted({k for r in history for k in r if k.startswith("val_loss_")}, key=lambda s: int(s.rsplit("_", 1)[1]))
    for key in val_keys:
        pts = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        ax.plot(*zip(*pts), "o-", ms=3, label=f"validation {key.rsplit('_', 1)[1]}²")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (L²)")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_title(title or "training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
