"""Nonlinear denoising score matching (NDSM) vs standard VP DSM; control-variate variance.

What it shows
-------------
1. **Imbalanced mixture, few samples.** 2-D mixture of three Gaussians (std 0.15) with
   weights 0.8 / 0.15 / 0.05. For training sets of n points, the same MLP
   (:class:`fsdiff.points.mlp.MLPScore`, with a base score: ``-x`` for DSM, ``grad log pi_ref`` for NDSM)
   is trained with the same steps and batch by (a) VP DSM and (b) NDSM with ``pi_ref`` a 3-component
   EM fit to the training set (one-step loss with the control variate; forward paths from a
   bank of EM trajectories refreshed every 100 steps). Reported: error of the recovered mode
   weights (samples assigned to the nearest true mean; L1 distance to the true weights, and
   to the training set's empirical weights), fraction of samples off all modes (> 4 std), energy
   distance to fresh data.
2. **Gradient variance vs dt.** Trace of the per-sample loss-gradient covariance at t = 0.5
   (fixed network), with and without the control variate, for ``pi_ref = N(0, I)`` (standard VP)
   and the fitted mixture; log-log slopes (expected -1 without, 0 with).
3. **Function space.** NDSM vs DSM for MNIST digits truncated to Fourier modes |k| <= 3 (values
   on a 7x7 grid, 49-D, standardised), ``pi_ref`` = 10-cluster k-means mixture (drift towards
   the cluster means), 1000 training digits; energy distance in L² (grid quadrature) to
   held-out digits and the L1 error of the cluster occupation of generated samples.

Runtime (2 CPU cores shared with other jobs, 1 thread): about 6-8 minutes with the defaults.
Defaults: n in {30, 100, 1000}; 1500 Adam steps, batch 256; NDSM grid from
``NDSM.steps_for(pi_ref, rate=0.125)`` (``beta_max dt / (2 v_min) <= 1/8``; the fitted references
have v_min ~ 0.01-0.02, so 3000-7000 steps: at rate ~0.45 EM's bias put 2-7% of the samples
off every mode), the DSM sampler on a grid of the same size; 3000 samples; VP beta in [0.1, 20].

Run: ``python resolution_studies/ndsm_study.py [--quick] [--no-mnist]``; writes
``resolution_studies/results/ndsm/{summary.md, results.json, samples.png, grad_variance.png, mnist7_samples.png}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import fsdiff as fd  # noqa: E402
from fsdiff.io import atomic_write, write_json  # noqa: E402
from fsdiff.points.metrics import energy_distance as point_energy_distance  # noqa: E402
from fsdiff.points.mlp import MLPScore  # noqa: E402
from fsdiff.points.ndsm import (  # noqa: E402
    NDSM,
    fit_reference_mixture,
    kmeans,
    ndsm_loss,
    ndsm_sample,
    per_sample_gradients,
    point_dsm_loss,
    standard_normal_reference,
)
from fsdiff.plotting import save_figure  # noqa: E402
from fsdiff.points import sample_points  # noqa: E402
from fsdiff.points.toy import imbalanced_means, imbalanced_mixture  # noqa: E402
from fsdiff.training import fit  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "ndsm"
WEIGHTS = (0.8, 0.15, 0.05)
STD = 0.15


def train_dsm(data: torch.Tensor, sde, args, gen) -> tuple[MLPScore, float]:
    torch.manual_seed(args.seed)  # network init
    net = MLPScore(data.shape[1], sde, hidden=args.hidden, depth=3, base=lambda x: -x)
    def batch(i):
        return point_dsm_loss(net, data[torch.randint(data.shape[0], (args.batch,), generator=gen)], sde, gen)
    secs = fit(net.parameters(), batch, args.steps).seconds
    return net, secs


def train_ndsm(data: torch.Tensor, proc: NDSM, sde, args, gen, cv="exact") -> tuple[MLPScore, float]:
    """NDSM with a bank of forward EM paths (``args.bank`` paths, refreshed every 100 steps)."""
    torch.manual_seed(args.seed)
    net = MLPScore(data.shape[1], sde, hidden=args.hidden, depth=3, base=proc.pi_ref.score)
    bank = {}

    def batch(i):
        if i % 100 == 0:
            x0 = data[torch.randint(data.shape[0], (args.bank,), generator=gen)]
            bank["paths"] = proc.trajectories(x0, gen)  # (K+1, M, d)
        n = torch.randint(proc.steps, (args.batch,), generator=gen)
        j = torch.randint(bank["paths"].shape[1], (args.batch,), generator=gen)
        xn = bank["paths"][n, j]
        return ndsm_loss(net, xn, proc, gen, control_variate=cv, n=n, xn=xn)

    secs = fit(net.parameters(), batch, args.steps).seconds
    return net, secs


def mode_stats(x: torch.Tensor, means: torch.Tensor, std: float) -> tuple[np.ndarray, float]:
    d = torch.cdist(x.double(), means)
    k = d.argmin(1)
    on = d.min(1).values < 4 * std
    w = torch.bincount(k[on], minlength=means.shape[0]).double()
    return (w / w.sum().clamp_min(1)).numpy(), float(1 - on.double().mean())


def part1(args, gen, sde) -> tuple[list[dict], dict]:
    means = imbalanced_means(3)
    truth = imbalanced_mixture(args.n_gen, gen)
    rows, samples = [], {}
    for n in args.sizes:
        data, lab = imbalanced_mixture(n, gen, return_labels=True)
        emp_w = (torch.bincount(lab, minlength=3).double() / n).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mix = fit_reference_mixture(data, 3, method="em", generator=gen)
        steps = NDSM.steps_for(mix, sde, rate=args.rate, min_steps=args.ndsm_steps)
        proc = NDSM(mix, sde, steps=steps)
        for method in ("dsm", "ndsm"):
            t0 = time.perf_counter()
            if method == "dsm":
                net, secs = train_dsm(data, sde, args, gen)
                with torch.no_grad():
                    x = sample_points(net, sde, args.n_gen, 2, steps=steps, generator=gen)
            else:
                net, secs = train_ndsm(data, proc, sde, args, gen)
                with torch.no_grad():
                    x = ndsm_sample(net, proc, args.n_gen, gen)
            w, off = mode_stats(x, means, STD)
            row = {"n_train": n, "method": method, "grid_steps": steps, "pi_ref_var_min": float(mix.variances.min()),
                   "weights": w.tolist(), "weight_l1_error": float(np.abs(w - WEIGHTS).sum()),
                   "weight_l1_vs_trainset": float(np.abs(w - emp_w).sum()), "trainset_weights": emp_w.tolist(),
                   "pi_ref_weights": mix.weights.tolist(), "off_mode_fraction": off,
                   "energy_distance": point_energy_distance(x, truth), "train_seconds": secs,
                   "total_seconds": time.perf_counter() - t0}
            rows.append(row)
            samples[(n, method)] = x
            print(f"  n={n} {method}: w={np.round(w, 3)} L1={row['weight_l1_error']:.3f} off={off:.3f} "
                  f"E={row['energy_distance']:.4f} ({row['total_seconds']:.0f}s)", flush=True)
    return rows, samples


def part2(args, gen, sde) -> dict:
    """Per-sample gradient variance (trace) at t = 0.5 vs dt, with and without control variate."""
    torch.manual_seed(args.seed + 1)
    out = {}
    data = imbalanced_mixture(args.var_batch, gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mix = fit_reference_mixture(imbalanced_mixture(2000, gen), 3, generator=gen)
    for ref_name, ref, dts in (("N(0,I)", standard_normal_reference(2), args.dts_gauss),
                               ("mixture", mix, args.dts_mix)):
        net = MLPScore(2, sde, hidden=64, depth=2, base=ref.score)
        res = {"dt": [], "none": [], "exact": []}
        for dt in dts:
            steps = int(round(1 / dt))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proc = NDSM(ref, sde, steps)
            n = int(round(0.5 * steps)) - 1
            xn = proc.states_at(data, torch.full((data.shape[0],), n), gen)
            res["dt"].append(proc.dt)
            for cv in ("none", "exact"):
                g = torch.Generator().manual_seed(args.seed + 7)
                G = per_sample_gradients(net, lambda s: ndsm_loss(s, data, proc, g, control_variate=cv, n=n, xn=xn, weighting="none"))
                res[cv].append(float(G.var(0).sum()))
        for cv in ("none", "exact"):
            res[f"slope_{cv}"] = float(np.polyfit(np.log(res["dt"]), np.log(res[cv]), 1)[0])
        res["reduction_at_smallest_dt"] = res["none"][-1] / res["exact"][-1]
        out[ref_name] = res
        print(f"  {ref_name}: slopes none {res['slope_none']:.2f}, cv {res['slope_exact']:.2f}; "
              f"reduction {res['reduction_at_smallest_dt']:.0f}x", flush=True)
    return out


def part3(args, gen, sde) -> dict:
    """NDSM vs DSM on Fourier-truncated MNIST (7x7 grid, 49-D), pi_ref = 10-means mixture."""
    from fsdiff.data import load_mnist

    t_start = time.perf_counter()
    root = os.environ.get("FSDIFF_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    imgs, _ = load_mnist("train", root=root, limit=args.mnist_train + 2000)
    g7 = fd.Grid((7, 7))
    x = fd.resample(imgs.double(), fd.Grid((28, 28)), g7).reshape(imgs.shape[0], -1)
    mean, scale = x.mean(0), float(x.std())
    x = ((x - mean) / scale).float()
    data, test = x[: args.mnist_train], x[args.mnist_train:]
    mix = fit_reference_mixture(data, 10, method="kmeans", generator=gen)
    steps = NDSM.steps_for(mix, sde, rate=args.rate)
    proc = NDSM(mix, sde, steps)
    # cluster occupation measured with k-means centres of the held-out set's own clustering
    cent, lab = kmeans(test, 10, generator=gen)
    test_w = torch.bincount(lab, minlength=10).double() / lab.numel()
    as_fn = lambda v: v.double().reshape(-1, 1, 7, 7)  # noqa: E731
    res = {"dim": 49, "n_train": args.mnist_train, "ndsm_steps": steps, "pi_ref_var_min": float(mix.variances.min()),
           "pi_ref_var_max": float(mix.variances.max())}
    samples = {}
    old_hidden = args.hidden
    args.hidden = 256
    for method in ("dsm", "ndsm"):
        if method == "dsm":
            net, secs = train_dsm(data, sde, args, gen)
            with torch.no_grad():
                s = sample_points(net, sde, args.mnist_gen, 49, steps=steps, generator=gen)
        else:
            net, secs = train_ndsm(data, proc, sde, args, gen)
            with torch.no_grad():
                s = ndsm_sample(net, proc, args.mnist_gen, gen)
        w = torch.bincount(torch.cdist(s.double(), cent).argmin(1), minlength=10).double() / s.shape[0]
        res[method] = {"energy_distance_L2": fd.eval.metrics.energy_mmd(as_fn(s), as_fn(test[: args.mnist_gen]), g7),
                       "cluster_weight_l1": float((w - test_w).abs().sum()), "train_seconds": secs}
        samples[method] = (s[:10].double() * scale + mean).reshape(10, 7, 7)
        print(f"  mnist {method}: {res[method]}", flush=True)
    args.hidden = old_hidden
    # floor: a second held-out set of the same size
    ref = test[args.mnist_gen: 2 * args.mnist_gen]
    w = torch.bincount(torch.cdist(ref.double(), cent).argmin(1), minlength=10).double() / ref.shape[0]
    res["heldout_data"] = {"energy_distance_L2": fd.eval.metrics.energy_mmd(as_fn(ref), as_fn(test[: args.mnist_gen]), g7),
                           "cluster_weight_l1": float((w - test_w).abs().sum())}
    res["seconds"] = time.perf_counter() - t_start
    res["_samples"] = samples
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-mnist", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default: results/ndsm)")
    args = ap.parse_args(argv)
    out = args.out
    torch.set_num_threads(1)
    args.sizes, args.steps, args.batch, args.hidden, args.bank = [30, 100, 1000], 1500, 256, 128, 2048
    args.ndsm_steps, args.n_gen, args.var_batch, args.rate = 1000, 3000, 1000, 0.125
    args.dts_gauss, args.dts_mix = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4], [3e-3, 1e-3, 3e-4, 1e-4]
    args.mnist_train, args.mnist_gen = 1000, 1000
    if args.quick:
        args.sizes, args.steps, args.n_gen, args.var_batch, args.bank, args.rate = [30], 30, 300, 100, 256, 0.5
        args.dts_gauss, args.dts_mix, args.mnist_train, args.mnist_gen = [1e-1, 1e-2], [3e-3, 1e-3], 200, 200
    gen = torch.Generator().manual_seed(args.seed)
    sde = fd.VPSDE(None, beta_min=0.1, beta_max=20.0)  # a schedule for points in R^d (Q = I)
    t_all = time.perf_counter()
    print("part 1: imbalanced mixture", flush=True)
    rows, samples = part1(args, gen, sde)
    print("part 2: gradient variance", flush=True)
    var = part2(args, gen, sde)
    mn = None
    if not args.no_mnist:
        print("part 3: MNIST 7x7", flush=True)
        mn = part3(args, gen, sde)
    total = time.perf_counter() - t_all

    # ------------------------------------------------------------------ figures
    fig, axes = plt.subplots(2, len(args.sizes), figsize=(3.2 * len(args.sizes), 6.4), squeeze=False)
    for j, n in enumerate(args.sizes):
        for i, m in enumerate(("dsm", "ndsm")):
            p = samples[(n, m)][:2000].numpy()
            ax = axes[i, j]
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5)
            ax.set_xlim(-2.5, 2.5), ax.set_ylim(-2.5, 2.5), ax.set_xticks([]), ax.set_yticks([])
            r = next(r for r in rows if r["n_train"] == n and r["method"] == m)
            ax.set_title(f"{m}, n={n}: w=" + "/".join(f"{v:.2f}" for v in r["weights"]), fontsize=8)
    save_figure(fig, out / "samples.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, res) in zip(axes, var.items()):
        for cv, lab in (("none", "no control variate"), ("exact", "control variate")):
            ax.loglog(res["dt"], res[cv], "o-", label=f"{lab} (slope {res[f'slope_{cv}']:.2f})")
        ax.set_xlabel("dt"), ax.set_ylabel("tr Cov[per-sample gradient]"), ax.set_title(f"pi_ref = {name}, t = 0.5")
        ax.legend(fontsize=8)
    save_figure(fig, out / "grad_variance.png")

    if mn is not None:
        fig, axes = plt.subplots(2, 10, figsize=(13, 3))
        for i, m in enumerate(("dsm", "ndsm")):
            for j in range(10):
                axes[i, j].imshow(mn["_samples"][m][j].numpy(), cmap="gray")
                axes[i, j].axis("off")
            axes[i, 0].set_title(m, fontsize=8, loc="left")
        save_figure(fig, out / "mnist7_samples.png")
        mn = {k: v for k, v in mn.items() if k != "_samples"}

    write_json(out / "results.json", {"config": vars(args), "imbalanced": rows, "grad_variance": var, "mnist": mn,
                                      "total_seconds": total})

    # ------------------------------------------------------------------ summary
    L = ["# Nonlinear DSM vs standard DSM", "",
         f"Run: `python resolution_studies/ndsm_study.py{' --quick' if args.quick else ''}` — total {total:.0f} s on 1 thread "
         f"(2 shared cores), seed {args.seed}. Same MLP, {args.steps} Adam steps of batch {args.batch} for both methods; "
         f"NDSM grid `NDSM.steps_for(pi_ref, rate={args.rate})` (at least {args.ndsm_steps} steps; column `grid`), "
         f"DSM reverse EM on a grid of the same size; pi_ref: 3-component EM fit (5 restarts); {args.n_gen} samples.", "",
         "## 1. Imbalanced mixture (weights 0.8 / 0.15 / 0.05)", "",
         "`L1 true`: L1 distance of the recovered mode weights to (0.8, 0.15, 0.05); `L1 train`: to the training "
         "set's own mode fractions (what a perfect fit of the training set would give); `off`: fraction of samples "
         "more than 4 std from every mode; energy distance to fresh data (lower is better).", "",
         "| n | method | grid | weights | L1 true | L1 train | off | energy dist. | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['n_train']} | {r['method']} | {r['grid_steps']} | {'/'.join(f'{v:.3f}' for v in r['weights'])} | {r['weight_l1_error']:.3f} | "
                 f"{r['weight_l1_vs_trainset']:.3f} | {r['off_mode_fraction']:.3f} | {r['energy_distance']:.4f} | {r['train_seconds']:.0f} |")
    L += ["", "Training-set mode fractions: " + "; ".join(
        f"n={r['n_train']}: {'/'.join(f'{v:.3f}' for v in r['trainset_weights'])}" for r in rows if r["method"] == "dsm"), "",
        "## 2. Loss-gradient variance vs dt (t = 0.5, fixed network)", "",
        "| pi_ref | dt | var, no CV | var, CV |", "|---|---|---|---|"]
    for name, res in var.items():
        for dt, a, b in zip(res["dt"], res["none"], res["exact"]):
            L.append(f"| {name} | {dt:.1e} | {a:.4g} | {b:.4g} |")
    L.append("")
    for name, res in var.items():
        L.append(f"- {name}: fitted log-log slope {res['slope_none']:.2f} without the control variate (expected -1), "
                 f"{res['slope_exact']:.2f} with it (expected 0); reduction {res['reduction_at_smallest_dt']:.0f}x at dt = {res['dt'][-1]:.0e}.")
    L.append("")
    if mn is not None:
        L += ["## 3. Function space: MNIST truncated to |k| <= 3 (7x7 grid, 49-D)", "",
              f"{mn['n_train']} training digits, standardised; pi_ref = 10-means mixture (variances "
              f"{mn['pi_ref_var_min']:.2f}..{mn['pi_ref_var_max']:.2f}), NDSM grid {mn['ndsm_steps']} steps; MLP width 256. "
              "Energy distance in L² of the 7x7 grid (quadrature) to held-out digits; cluster L1: occupation of 10 "
              "k-means cells of held-out data, generated vs held-out. `heldout_data`: a second held-out set (the floor).", "",
              "| method | energy dist. | cluster L1 | train s |", "|---|---|---|---|"]
        for m in ("dsm", "ndsm"):
            r = mn[m]
            L.append(f"| {m} | {r['energy_distance_L2']:.4f} | {r['cluster_weight_l1']:.3f} | {r['train_seconds']:.0f} |")
        r = mn["heldout_data"]
        L += [f"| heldout_data | {r['energy_distance_L2']:.4f} | {r['cluster_weight_l1']:.3f} | - |", "", "Samples: `mnist7_samples.png`.", ""]
    L += ["Figures: `samples.png`, `grad_variance.png`.", ""]
    text = "\n".join(L)
    atomic_write(out / "summary.md", lambda f: f.write(text), binary=False)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
