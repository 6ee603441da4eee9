"""Generate from a trained run at any resolution and write the outputs (netCDF + PNG).

This is what ``fsdiff sample`` and the demo call. A model trained on one grid is evaluated
on others of the same domain: the score operator's spectral weights act on the modes both
grids keep, so a grid finer than the model's ``modes`` is allowed — the extra modes are
handled by the pointwise parts of the network and the sampler's Q-coloured noise (see
``docs/sampling.md``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import torch

from ..grid import Grid, to_dataarray
from ..io import write_netcdf
from ..plotting import field_panels, save_figure
from ..sampling import chunk_size_for, sample

__all__ = ["parse_resolution", "sample_run", "output_paths"]


def parse_resolution(text: str | int, ndim: int) -> tuple[int, ...]:
    """``"64"`` -> ``(64,)*ndim``; ``"64x32"`` -> ``(64, 32)`` (must have ``ndim`` entries)."""
    import re

    t = str(text).strip().lower()
    if not re.fullmatch(r"\d+(x\d+)*", t):
        raise ValueError(f"resolution {text!r} is not an integer N or NxM (e.g. 64 or 64x32)")
    shape = tuple(int(p) for p in t.split("x"))
    if len(shape) == 1:
        shape = shape * ndim
    if len(shape) != ndim:
        raise ValueError(f"resolution {text!r} is {len(shape)}-D but the model's grid is {ndim}-D")
    if any(n < 2 for n in shape):
        raise ValueError(f"resolution {text!r}: need at least 2 points per axis")
    return shape


def output_paths(out: str | os.PathLike, shapes: Sequence[tuple[int, ...]]) -> list[Path]:
    """``samples.nc`` for one resolution; ``samples_64.nc``, ``samples_128x64.nc``, ... for several."""
    out = Path(out)
    if out.suffix != ".nc":
        raise ValueError(f"--out must end in .nc; got {out}")
    if len(shapes) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{'x'.join(map(str, s)) if len(set(s)) > 1 else s[0]}.nc") for s in shapes]


def sample_run(
    model,
    sde,
    train_grid: Grid,
    shapes: Sequence[tuple[int, ...]],
    n: int,
    channels: int,
    sampler: str = "auto",
    steps: int = 200,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    chunk_size: int | None = 16,
    progress: bool = True,
    attrs: dict | None = None,
    n_plot: int = 16,
    time_grid: str = "edm",
    cmap: str = "viridis",
    max_memory: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[tuple[int, ...], torch.Tensor], dict]:
    """Sample ``n`` functions at each grid shape with one seed; optionally write netCDF + PNG.

    ``cmap`` colours the PNG grids (``"gray"`` for grey-scale images). Every resolution starts from
    ``torch.Generator().manual_seed(seed)``: the prior draws are
    nested, so the samples at different resolutions are driven by the same random function.
    ``sampler="auto"`` takes :func:`fsdiff.sampling.default_sampler` of the model.
    Returns ``({shape: (n, channels, *shape)}, info)``, ``info = {"sampler", "nfe", "seconds"}``: the
    scheme that ran, score evaluations per resolution and ``{shape: wall-clock s}``.
    ``max_memory`` (bytes): choose the chunk per resolution by :func:`fsdiff.sampling.chunk_size_for`
    instead of ``chunk_size``. ``device``: where the model and the state live (the returned samples
    are on the CPU).
    """
    if n < 1:
        raise ValueError(f"n must be positive; got {n}")
    paths = output_paths(out, shapes) if out is not None else [None] * len(shapes)
    results, info = {}, {"sampler": sampler, "nfe": 0, "seconds": {}}
    for shape, path in zip(shapes, paths):
        grid = Grid(shape, train_grid.length)
        gen = torch.Generator().manual_seed(seed)
        chunk = chunk_size if max_memory is None else chunk_size_for(model, grid, n, channels, max_memory)
        t0 = time.perf_counter()
        with torch.no_grad():
            x, run = sample(model, sde, grid, n, channels=channels, sampler=sampler, steps=steps, generator=gen,
                            chunk_size=chunk, progress=progress, time_grid=time_grid, return_info=True, device=device)
        x = x.cpu()
        info.update(sampler=run["sampler"], nfe=run["nfe"])
        info.setdefault("chunk", {})[shape] = chunk
        info["seconds"][shape] = time.perf_counter() - t0
        results[shape] = x
        if path is not None:
            meta = {
                "sampler": run["sampler"], "nfe": run["nfe"], "steps": steps, "time_grid": time_grid, "seed": seed, "resolution": "x".join(map(str, shape)),
                "train_resolution": "x".join(map(str, train_grid.shape)),
                "sde": json.dumps(sde.to_dict()), "covariance": repr(sde.covariance),
                "model": json.dumps(getattr(model, "spec", {"type": type(model).__name__})),
            }
            meta.update(attrs or {})
            write_netcdf(path, to_dataarray(x, grid, "samples", meta).to_dataset())
            k = min(n, n_plot)
            cols = 8 if k > 8 else k
            rows = [(f"{'x'.join(map(str, shape))}" if r == 0 else "",
                     [(f"#{i}", x[i, 0], grid) for i in range(r * cols, min(k, (r + 1) * cols))])
                    for r in range((k + cols - 1) // cols)]
            fig = field_panels(rows, shared_color=True, cmap=cmap, images=cmap == "gray")
            save_figure(fig, path.with_suffix(".png"))
    return results, info
