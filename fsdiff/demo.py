"""The demos behind ``fsdiff demo``: what fsdiff does, on built-in data, in a few minutes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from .covariance import Covariance, Matern, White
from .grid import Grid, to_dataarray

__all__ = ["noise_demo"]


def _write_netcdf(ds, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nc", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="scipy")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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

    from .plotting import field_panels, save_figure

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
        _write_netcdf(ds, out / f"noise_{N}.nc")
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
    _write_text(json.dumps(table, indent=2), out / "noise_table.json")
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

