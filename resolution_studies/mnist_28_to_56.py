"""MNIST: train at 28² (and multilevel 14² -> 28²), sample at 28² and 56².

What it shows
-------------
The peer anchor: an FNO score model trained on MNIST at 28² with white noise goes from
energy MMD 0.045 at 28² to 1.20 at 56² (27x worse); with a Laplacian prior 2.3 -> 4.2
(1.8x). Here three fsdiff models with the same FNOScore network (periodic positional
features) and training budget:

* ``trace_28``: trace-class Matérn noise ``7.9² (100 - Laplacian)^-1.5`` (the paper's Bessel
  prior, pointwise variance ~1), trained at 28² only;
* ``trace_ml_14_28``: the same, trained coarse-to-fine (half the steps at 14², then 28²);
* ``white_28``: white noise ``White(sigma = 1/28)`` (pixel variance ~1 at 28², growing like N²;
  SDE built with ``allow_non_trace_class=True``), trained at 28².

Each is sampled at 28² and 56² (same seed: nested prior and noise) and compared with the
MNIST training images *served at that resolution* (band-limited Fourier interpolation of the
28² images, Nyquist mode dropped, unclamped; see :mod:`fsdiff.data.mnist`): energy MMD
(L² distance with quadrature on the unit square, so values are comparable across grids, but
NOT in the peers' units — compare the ratio 56²/28²) and the Fréchet distance of fsdiff's
own small MNIST classifier (inputs resized to 28² by Fourier truncation, so it measures the
content of the low modes; its test accuracy is recorded in ``summary.md``).

Runtime on 2 CPU cores (1 thread, unloaded): ~12 min (training ~3 min per model, the
classifier ~1 min once, then cached in ``~/.cache/fsdiff``). Defaults: FNOScore width 24,
modes 12, 3 layers; 1200 steps of batch 64; EM sampler 50 steps; 128 samples vs 512 images
per resolution; seed 0.

Outputs (``results/mnist_28_to_56/``): ``mnist_28_to_56.nc``, ``mnist_28_to_56.png`` (metrics
and samples at both resolutions), ``<variant>/invariance.*``, ``summary.md``.

Run: ``FSDIFF_DATA_DIR=/path/to/data python resolution_studies/mnist_28_to_56.py``
(``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from _common import fd, md_table, parser, setup, train_run, write_netcdf, write_text

STUDY = "mnist_28_to_56"
VARIANTS = ("trace_28", "trace_ml_14_28", "white_28")
ANCHOR = {"white (peer)": (0.045, 1.20), "Laplacian (peer)": (2.3, 4.2)}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, STUDY)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--modes", type=int, default=12)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--n-samples", type=int, default=128)
    p.add_argument("--n-reference", type=int, default=512)
    p.add_argument("--sampler-steps", type=int, default=50)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--data-limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--classifier-cache", type=str, default="~/.cache/fsdiff", help="where the classifier is cached")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.width, args.modes, args.layers = 3, 8, 4, 4, 1
        args.n_samples, args.n_reference, args.sampler_steps = 8, 16, 3
        args.data_limit, args.classifier_steps = args.data_limit or 512, 20
    env = setup(args)
    import xarray as xr

    from fsdiff.classifier import load_or_train_classifier
    from fsdiff.config import config_from_dict
    from fsdiff.data import MNIST
    from fsdiff.invariance import evaluate_invariance, plot_invariance
    from fsdiff.plotting import field_panels, save_figure
    from fsdiff.training import load_run

    t_all = time.perf_counter()
    kw = {"n_train": args.data_limit} if args.quick else {}
    clf, rec = load_or_train_classifier("mnist", args.classifier_cache, steps=args.classifier_steps, **kw)
    print(f"classifier: test accuracy {rec['accuracy']:.4f}", flush=True)
    data_spec = {"type": "mnist", "kind": "mnist", "split": "train", "band_limit": True}
    if args.data_limit:
        data_spec["limit"] = args.data_limit
    reference = MNIST(**{k: v for k, v in data_spec.items() if k != "type"})
    results, info, samples = [], {}, {}
    for name in args.variants:
        d = {
            "name": name, "grid": {"shape": [28, 28]},
            "sde": {"type": "vp", "covariance": {"type": "matern", "alpha": 1.5, "tau": 10.0, "sigma": 7.9}},
            "model": {"type": "fno_score", "width": args.width, "modes": [args.modes, args.modes],
                      "n_layers": args.layers, "positional": "periodic"},
            "data": data_spec,
            "training": {"steps": args.steps, "batch_size": args.batch, "lr": 2e-3,
                         "warmup_steps": min(100, args.steps // 5), "final_lr_ratio": 0.05, "ema_decay": 0.995,
                         "seed": args.seed, "n_val": 16 if args.quick else 128, "eval_every": 0, "log_every": 10},
        }
        if name == "trace_ml_14_28":
            d["multilevel"] = {"levels": [14, 28], "schedule": "coarse_to_fine", "fractions": [0.5, 0.5]}
        cfg = config_from_dict(d)
        run_dir = args.work_dir / name
        tr = train_run(run_dir, cfg, white_sigma=1.0 / 28 if name.startswith("white") else None)
        print(f"{name}: trained {args.steps} steps in {tr['seconds']:.0f} s", flush=True)
        t0 = time.perf_counter()
        ds = evaluate_invariance(run_dir, [28, 56], n_samples=args.n_samples, sampler="em", steps=args.sampler_steps,
                                 seed=args.seed, reference=reference, out_dir=args.out / name,
                                 n_reference=args.n_reference, label=name, classifier=clf, chunk_size=64)
        info[name] = {"train_s": tr["seconds"], "eval_s": time.perf_counter() - t0}
        results.append(ds.expand_dims(variant=[name]))
        # a few samples at both resolutions for the figure (same seed as the evaluation: nested)
        model, sde, _, _ = load_run(run_dir)
        from fsdiff.sampling import sample

        samples[name] = {}
        for N in (28, 56):
            with torch.no_grad():
                samples[name][N] = sample(model, sde, fd.Grid((N, N)), 4, 1, sampler="em", steps=args.sampler_steps,
                                          generator=torch.Generator().manual_seed(args.seed))
    ds = xr.concat(results, dim="variant", combine_attrs="drop_conflicts")
    for k in ("run", "label", "sde"):
        ds.attrs.pop(k, None)
    ds.attrs.update(env=env, classifier_accuracy=float(rec["accuracy"]), training_steps=args.steps,
                    white_noise="White(sigma=1/28) with allow_non_trace_class=True",
                    energy_mmd_units="L2 distance on the unit square (quadrature), not the peers' pixel units")
    write_netcdf(ds, args.out / f"{STUDY}.nc")
    plot_invariance(results[0].isel(variant=0), args.out / f"{STUDY}_metrics.png",
                    others=[r.isel(variant=0) for r in results[1:]])
    rows_fig = []
    for name in args.variants:
        for N in (28, 56):
            g = fd.Grid((N, N))
            rows_fig.append((f"{name} {N}²", [(f"#{i}", samples[name][N][i, 0], g) for i in range(4)]))
    fig = field_panels(rows_fig, shared_color=False, cmap="gray")
    save_figure(fig, args.out / f"{STUDY}.png")

    rows = []
    for name in args.variants:
        m = ds["metrics"].sel(variant=name)
        e28, e56 = float(m.sel(resolution=28, metric="energy_mmd")), float(m.sel(resolution=56, metric="energy_mmd"))
        f28, f56 = (float(m.sel(resolution=28, metric="classifier_frechet")),
                    float(m.sel(resolution=56, metric="classifier_frechet")))
        rows.append([name, e28, e56, e56 / e28, f28, f56, f56 / f28,
                     float(m.sel(resolution=28, metric="val_loss")), float(m.sel(resolution=56, metric="val_loss"))])
    for k, (a, b) in ANCHOR.items():
        rows.append([k, a, b, b / a, "-", "-", "-", "-", "-"])
    table = md_table(["model", "energy MMD 28²", "56²", "ratio 56/28", "classifier FD 28²", "56²", "ratio",
                      "val loss 28²", "56²"], rows)
    times = ", ".join(f"{k} train {v['train_s']:.0f} s / eval {v['eval_s']:.0f} s" for k, v in info.items())
    summary = (f"# mnist_28_to_56: trained at 28², sampled at 28² and 56²\n\n{env}. {args.steps} training steps "
               f"(batch {args.batch}), EM {args.sampler_steps} steps, {args.n_samples} samples vs {args.n_reference} "
               f"training images per resolution; classifier test accuracy {rec['accuracy']:.4f}. "
               f"Total {time.perf_counter() - t_all:.0f} s ({times}).\n\n{table}\n\n"
               "Energy MMD is the energy distance under the L² norm of functions on the unit square (not the peers' "
               "pixel units): compare the 56/28 ratios, not the absolute values.\n\n"
               f"![metrics]({STUDY}_metrics.png)\n\n![samples]({STUDY}.png)\n")
    write_text(args.out / "summary.md", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
