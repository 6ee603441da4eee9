"""Trace-class vs white noise under grid refinement.

What it shows
-------------
* Pointwise variance ``E u(x)²`` and mean squared L² norm ``E ||u||²`` of samples of a
  trace-class Gaussian (Matérn ``(tau² - Laplacian)^-alpha``, alpha = 2, tau = 3, scaled to
  continuum pointwise variance 1) and of white noise (``White(sigma = 1/32)``, i.e. pixel
  variance ~1 at 32²) on grids 16² ... 256², with the exact values from the eigenvalues.
  Trace class: both converge (to 1). White noise: both grow like N² — it is not a function.
* Nested sampling: one generator seed gives the same random function at 32², 64², 128² and
  256² (each coarse sample is the Fourier restriction of the fine one); the figure shows it,
  and the netCDF stores the max restriction error.

Runtime on 2 CPU cores: ~10 s. Defaults: ``--n 128`` samples per resolution,
resolutions 16 32 64 128 256, seed 0.

Outputs (``results/noise/``): ``noise.nc`` (dims resolution, kind; plus one nested sample per
resolution), ``noise.png``, ``summary.md``.

Run: ``python resolution_studies/noise.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from _common import fd, md_table, parser, setup, write_netcdf, write_text

STUDY = "noise"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, STUDY)
    p.add_argument("--n", type=int, default=128, help="samples per resolution")
    p.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.resolutions = 8, [8, 16, 32, 64]
    env = setup(args)
    import xarray as xr

    from fsdiff.plotting import field_panels, save_figure

    t0 = time.perf_counter()
    res = sorted(args.resolutions)
    cov = fd.Matern(alpha=2.0, tau=3.0).with_pointwise_variance(1.0, ndim=2)
    white = fd.White(sigma=1.0 / 32)
    kinds = {"trace_class": cov, "white": white}
    var = np.zeros((len(res), 2))
    norm2 = np.zeros((len(res), 2))
    exact = np.zeros((len(res), 2))
    first: dict[str, dict[int, torch.Tensor]] = {k: {} for k in kinds}
    for i, N in enumerate(res):
        g = fd.Grid((N, N))
        for j, (k, c) in enumerate(kinds.items()):
            u = c.sample(g, args.n, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
            var[i, j] = float(u.var(dim=0).mean())
            norm2[i, j] = float(g.norm(u).square().mean())
            exact[i, j] = c.pointwise_variance(g)
            first[k][N] = u[0, 0]
    # nesting: restriction of the finest sample equals the coarse sample drawn with the same seed
    gmax = fd.Grid((res[-1],) * 2)
    nest_err = []
    for N in res:
        r = fd.resample(first["trace_class"][res[-1]][None, None], gmax, fd.Grid((N, N)))[0, 0]
        nest_err.append(float((r - first["trace_class"][N]).abs().max()))
    data = {
        "pointwise_variance": (("resolution", "kind"), var),
        "l2_norm_sq": (("resolution", "kind"), norm2),
        "pointwise_variance_exact": (("resolution", "kind"), exact),
        "nesting_max_error": (("resolution",), np.array(nest_err)),
    }
    shown = res[-4:]
    for N in shown:
        for k in kinds:
            data[f"{k}_sample_{N}"] = ((f"x{N}", f"y{N}"), first[k][N].numpy())
    ds = xr.Dataset(data, coords={"resolution": np.array(res), "kind": list(kinds)},
                    attrs={"trace_class": repr(cov), "white": repr(white), "n": args.n, "seed": args.seed, "env": env})
    write_netcdf(args.out / "noise.nc", ds)

    import matplotlib.pyplot as plt

    fig = field_panels([(f"trace class", [(f"{N}²", first["trace_class"][N], fd.Grid((N, N))) for N in shown]),
                        (f"white", [(f"{N}²", first["white"][N], fd.Grid((N, N))) for N in shown])],
                       shared_color=False)
    fig.suptitle(f"one seed at four resolutions (top: the same function, nested; bottom: white noise)", fontsize=10, y=1.02)
    save_figure(fig, args.out / "noise_samples.png")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for j, k in enumerate(kinds):
        axes[0].loglog(res, var[:, j], "o-", label=f"{k} (measured)")
        axes[0].loglog(res, exact[:, j], "k:", lw=1)
        axes[1].loglog(res, norm2[:, j], "o-", label=k)
    axes[0].set_title("pointwise variance (dotted: exact)", fontsize=9)
    axes[1].set_title("mean squared L² norm", fontsize=9)
    for a in axes:
        a.set_xlabel("N (N² grid)")
        a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, args.out / "noise.png")

    rows = [[N, var[i, 0], exact[i, 0], norm2[i, 0], var[i, 1], norm2[i, 1], nest_err[i]] for i, N in enumerate(res)]
    table = md_table(["N", "trace-class var", "exact", "trace-class E‖u‖²", "white var", "white E‖w‖²",
                      "nesting error"], rows)
    summary = (f"# noise: trace-class vs white noise under refinement\n\n{env}; {args.n} samples per resolution, "
               f"seed {args.seed}; {time.perf_counter() - t0:.1f} s.\n\n{table}\n\n"
               f"Trace class: variance and norm converge (to 1); white noise: both grow like N² "
               f"(x{var[-1, 1] / var[0, 1]:.0f} from {res[0]}² to {res[-1]}²).\n\n"
               f"![noise](noise.png)\n\n![samples](noise_samples.png)\n")
    write_text(args.out / "summary.md", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
