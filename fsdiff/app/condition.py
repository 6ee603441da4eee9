"""What ``fsdiff superres`` and ``fsdiff inpaint`` do: read an observation, sample, write netCDF + PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..conditional import sample_conditional
from ..errors import DataError
from ..grid import Grid, from_dataarray, to_dataarray
from ..io import read_netcdf, write_netcdf
from ..plotting import save_figure

__all__ = ["read_field", "read_mask", "condition_run", "read_images"]


def _first_variable(path: Path):
    """The first data variable of a netCDF file (an xarray DataArray)."""
    ds = read_netcdf(path)
    return ds[next(iter(ds.data_vars))] if hasattr(ds, "data_vars") else ds


def read_field(path: str | os.PathLike, length) -> tuple[torch.Tensor, Grid]:
    """A 2-D field from ``.nc`` (the first data variable, ``(..., N1, N2)``) or a grey-scale ``.png`` (values in [0, 1]).

    PNG rows are the grid's first axis (as fsdiff's PNGs are written); RGB(A) is averaged to grey.
    Returns ``(u (1, N1, N2) float64, grid)``; the PNG's grid has the model's domain ``length``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such input file")
    if p.suffix == ".nc":
        u, grid = from_dataarray(_first_variable(p))
        u = u.double()
        while u.ndim > grid.ndim + 1:
            if u.shape[0] != 1:
                raise DataError(f"{p} holds {u.shape[0]} fields; superres takes one (shape {tuple(u.shape)})")
            u = u[0]
        return u.reshape(-1, *grid.shape)[:1], grid
    if p.suffix.lower() == ".png":
        import matplotlib.image as mpimg

        img = torch.as_tensor(mpimg.imread(p), dtype=torch.float64)
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        if img.max() > 1.0:
            img = img / 255.0
        return img[None], Grid(tuple(img.shape), length)
    raise DataError(f"{p}: expected a .nc or .png input; got {p.suffix or 'no extension'}")


def read_mask(path: str | os.PathLike, shape: tuple[int, ...], length) -> torch.Tensor:
    """A mask image (``.png`` / ``.nc``): True (observed) where the value is above 0.5; must have ``shape``."""
    m, _ = read_field(path, length)
    if tuple(m.shape[1:]) != tuple(shape):
        raise DataError(f"the mask {path} has shape {tuple(m.shape[1:])}; the input image has {tuple(shape)}")
    return m[0] > 0.5


def condition_run(model, sde, grid: Grid, condition, observed: torch.Tensor, observed_grid: Grid, n: int,
                  steps: int, seed: int, out: str | os.PathLike, chunk_size: int | None, progress: bool,
                  attrs: dict) -> tuple[torch.Tensor, dict]:
    """Sample ``n`` functions on ``grid`` under ``condition`` and write ``out`` (netCDF) and ``out.png``.

    The PNG shows the observation, up to 8 samples and the per-pixel standard deviation of the samples.
    """
    x, info = sample_conditional(model, sde, grid, n, condition, steps=steps, generator=torch.Generator().manual_seed(seed),
                                 chunk_size=chunk_size, progress=progress, return_info=True)
    meta = {"condition": info["condition"], "nfe": info["nfe"], "steps": steps, "seed": seed,
            "resolution": "x".join(map(str, grid.shape)), "sde": json.dumps(sde.to_dict())}
    meta.update(attrs)
    write_netcdf(Path(out), to_dataarray(x, grid, "samples", meta).to_dataset())
    _figure(Path(out).with_suffix(".png"), observed, observed_grid, x, grid, info["condition"])
    return x, info


def _figure(path: Path, observed: torch.Tensor, obs_grid: Grid, x: torch.Tensor, grid: Grid, kind: str) -> None:
    import matplotlib.pyplot as plt

    k = min(8, x.shape[0])
    fig, axes = plt.subplots(1, k + 2, figsize=(1.7 * (k + 2), 2.0))
    panels = [(f"input {'x'.join(map(str, obs_grid.shape))}", observed[0])]
    panels += [(f"sample {i + 1}", x[i, 0]) for i in range(k)]
    panels += [("std", x[:, 0].double().std(0) if x.shape[0] > 1 else torch.zeros(grid.shape))]
    for j, (ax, (title, im)) in enumerate(zip(axes, panels)):
        ax.imshow(im.float().numpy(), cmap="gray", vmin=None if j == len(panels) - 1 else 0,
                  vmax=None if j == len(panels) - 1 else 1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{kind} on {'x'.join(map(str, grid.shape))}", fontsize=9)
    save_figure(fig, path)



def read_images(paths, shape: tuple[int, int]) -> torch.Tensor:
    """Images of ``shape`` from PNG files (one each) and netCDF files (one or more fields each): ``(K, 1, *shape)``."""
    out = []
    for path in paths:
        p = Path(path)
        if p.suffix == ".nc" and p.is_file():
            vals = torch.as_tensor(_first_variable(p).values, dtype=torch.float64)
            if tuple(vals.shape[-2:]) != tuple(shape):
                raise DataError(f"support images must be {shape[0]} x {shape[1]}; {p} holds {tuple(vals.shape)}")
            out.append(vals.reshape(-1, *shape))
            continue
        u, _ = read_field(p, (1.0, 1.0))
        if tuple(u.shape[1:]) != tuple(shape):
            raise DataError(f"support images must be {shape[0]} x {shape[1]} (rows x columns); {p} is "
                            f"{u.shape[1]} x {u.shape[2]}")
        out.append(u)
    if not out:
        raise DataError("no support images given (K = 0): pass at least one")
    return torch.cat(out)[:, None]
