"""Weak convergence order of reverse-SDE Euler–Maruyama in the step size, at several resolutions.

With the exact Gaussian oracle (:class:`fsdiff.oracles.GaussianScore`) every mode of the EM
chain is a linear Gaussian recursion, so the law of the chain's output is known in closed form
(:meth:`GaussianScore.em_chain_moments`): no Monte Carlo error at all. Started from the exact
``p_T``, the continuous reverse SDE reproduces ``p_eps = N(m mu, m² C + s² Q)`` exactly, so the
weak error of EM is

* ``err_trace``: relative error of the second moment ``E ||X - E X||²_{L²}`` (sum over modes);
* ``err_max``: largest relative error of a per-mode variance;
* ``err_mean``: relative L² error of the mean.

Error vs number of steps on 1-D 256 and 2-D 64² (same continuum problem), uniform and quadratic
time grids; the order is the least-squares slope of log error vs log steps over the finest
half of the step counts. Expected: order 1, and errors independent of the resolution.

Companion check (``c2f_check``): coarse-to-fine sampling 32² -> 64² -> 128² with the exact oracle
(new modes drawn from the exact forward marginal) against the exact law of single-level 128² EM
at the same step count: radially binned per-mode variance ratios, with their Monte Carlo error.

Run: ``python resolution_studies/em_weak_order.py``; writes
``resolution_studies/results/em_weak_order/{em_weak_order.csv, README.md, em_weak_order.png}``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

import fsdiff as fd
from fsdiff.oracles import GaussianScore
from fsdiff.sampling import time_steps

OUT = Path(__file__).resolve().parent / "results" / "em_weak_order"
EPS = 1e-3
STEPS = [10, 20, 40, 80, 160, 320, 640, 1280, 2560]


def mean_fn(grid: fd.Grid) -> torch.Tensor:
    x = grid.mesh()[0]
    return 0.5 * torch.sin(2 * math.pi * x) + 0.2 * torch.cos(6 * math.pi * x)


def errors(oracle: GaussianScore, grid: fd.Grid, steps: int, kind: str) -> dict:
    times = time_steps(oracle.sde, steps, EPS, kind)
    M, V = oracle.em_chain_moments(times, grid, start="exact")
    v = oracle.marginal_eigenvalues(EPS, grid)
    mu = float(oracle.sde.mean_scale(EPS)) * grid.rfft(oracle.mean_on(grid))
    w, mask = grid.rfft_weights, grid.mode_mask
    return {
        "err_trace": float(((V - v) * w).sum().abs() / (v * w).sum()),
        "err_max": float(((V - v).abs()[mask] / v[mask]).max()),
        "err_mean": float(((M - mu).abs().square() * w).sum().sqrt() / ((mu.abs().square() * w).sum().sqrt())),
    }


def c2f_check(oracle: GaussianScore, n: int = 256, steps: int = 50) -> list[str]:
    from fsdiff.sampling import sample_coarse_to_fine

    grids = [fd.Grid((32, 32)), fd.Grid((64, 64)), fd.Grid((128, 128))]
    fine = grids[-1]
    x, info = sample_coarse_to_fine(oracle, oracle.sde, grids, [0.5, 0.2], n, steps=steps, time_grid="quadratic",
                                    generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                                    data_covariance=oracle.cov, data_mean=oracle.mean_on, return_info=True)
    _, V = oracle.em_chain_moments(info["times"], fine, denoise=True)
    xh = fine.rfft(x)[:, 0]
    var = (xh - xh.mean(0)).abs().square().sum(0) / (n - 1) * fine.volume  # unbiased
    kmax = torch.maximum(*(k.abs() for k in torch.broadcast_tensors(*fine.wavenumbers)))
    out = [f"", f"## Coarse-to-fine 32² -> 64² -> 128² vs single-level 128² EM ({steps} quadratic steps, n = {n})",
           f"switch times {info['switch_times']}; ratio of sample variance to the exact single-level chain law,",
           "averaged over modes with max|k_i| in each band (SE = Monte Carlo standard error of the band mean)", "",
           "| band max|k_i| | modes | mean ratio | SE |", "|---|---|---|---|"]
    for lo, hi in ((1, 15), (16, 31), (32, 63)):
        sel = (kmax >= lo) & (kmax <= hi) & fine.mode_mask & (V > 0)
        r = (var[sel] / V[sel])
        out.append(f"| {lo}-{hi} | {int(sel.sum())} | {float(r.mean()):.4f} | {float(r.std() / sel.sum().sqrt()):.4f} |")
    return out


def order(steps: list[int], err: list[float]) -> float:
    h = len(steps) // 2
    return float(-np.polyfit(np.log(steps[h:]), np.log(err[h:]), 1)[0])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    Q = fd.Matern(alpha=2.0, tau=3.0)
    C = fd.Matern(alpha=2.5, tau=5.0)
    sde = fd.VPSDE(Q)
    oracle = GaussianScore(sde, C, mean=mean_fn)
    rows = []
    for grid in (fd.Grid(256), fd.Grid((64, 64))):
        for kind in ("uniform", "quadratic"):
            for n in STEPS:
                rows.append({"grid": "x".join(map(str, grid.shape)), "time_grid": kind, "steps": n, **errors(oracle, grid, n, kind)})
    with open(OUT / "em_weak_order.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)

    lines = ["# Weak order of reverse-SDE Euler–Maruyama (exact per-mode law, no Monte Carlo)", "",
             f"VP SDE (beta 0.1..20), Q = Matern(2, 3), data N(mu, Matern(2.5, 5)), eps = {EPS}, start from exact p_T.",
             "Order = slope of log error vs log steps over the finest half of step counts.", "",
             "| grid | time grid | order (trace) | order (max mode) | order (mean) | err_trace @ 160 | err_max @ 160 |",
             "|---|---|---|---|---|---|---|"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for gname in sorted({r["grid"] for r in rows}):
        for kind in ("uniform", "quadratic"):
            sel = [r for r in rows if r["grid"] == gname and r["time_grid"] == kind]
            st = [r["steps"] for r in sel]
            o = {k: order(st, [r[k] for r in sel]) for k in ("err_trace", "err_max", "err_mean")}
            at = {r["steps"]: r for r in sel}[160]
            lines.append(f"| {gname} | {kind} | {o['err_trace']:.3f} | {o['err_max']:.3f} | {o['err_mean']:.3f} | "
                         f"{at['err_trace']:.2e} | {at['err_max']:.2e} |")
            for a, key in zip(ax, ("err_trace", "err_max")):
                a.loglog(st, [r[key] for r in sel], "o-" if "x" in gname else "s--", label=f"{gname} {kind}")
    for a, key in zip(ax, ("err_trace", "err_max")):
        a.loglog(STEPS, [0.5 / s for s in STEPS], "k:", label="slope -1")
        a.set_xlabel("steps")
        a.set_title(key)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "em_weak_order.png", dpi=120)
    lines += ["", "Errors at equal steps agree between 1-D 256 and 2-D 64² only where the problems coincide;",
              "within one dimension they do not change with N (the chain is diagonal in Fourier and",
              "each kept mode's error is N-independent; the trace error converges as modes are added).", ""]
    # resolution check within one dimension
    e = [errors(oracle, fd.Grid(N), 160, "quadratic")["err_trace"] for N in (64, 256, 1024)]
    lines.append(f"1-D err_trace at 160 quadratic steps, N = 64/256/1024: {e[0]:.4e} / {e[1]:.4e} / {e[2]:.4e}")
    lines += c2f_check(oracle)
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
