"""MNIST / Fashion-MNIST sample quality at 28², 56² and 112², against real-data floors (issue 11).

For each data set and each variant, trains (if its run directory holds no checkpoint) for a fixed
wall-clock budget, samples at every resolution with one seed and measures, with
:class:`fsdiff.eval.quality.ImageQuality`: the fraction classified with confidence >= 0.9 by an
independent CNN, class-histogram entropy / log 10, classifier FD next to the real-data floor at the
same n, the fraction of power beyond |k| = 13, per-band power against the real images, and the
number of score evaluations. Writes ``results.json``, ``summary.md`` and one grey-scale sample grid
per variant (three resolutions) into ``--out``.

Variants (overrides of ``configs/<data>.toml``):

* ``single``: the shipped recipe (spectral preconditioning, band-limited UNO, 28² only);
* ``multilevel``: the same, trained 14² -> 28² (coarse_to_fine 0.4 / 0.6);
* ``white``: white-noise ablation (Q = I; grid-dependent, allowed only as a baseline);
* ``no_precond``: the same network predicting eta directly, no preconditioning.

``--sampler-table`` also measures quality against score evaluations for EM, PC, Heun PF-ODE and
Heun PF-ODE in Gaussian coordinates (``ode_gauss``) on the first variant.

    python resolution_studies/mnist_quality.py --data mnist --budget-s 600 --n 256
    python resolution_studies/mnist_quality.py --data mnist --runs single=pretrained/mnist.pt --n 256
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fsdiff._paths import REPO_ROOT as ROOT
import fsdiff as fd
from fsdiff.io import write_json
from fsdiff.plotting import field_panels, save_figure
from fsdiff.eval.quality import ImageQuality, format_quality_table, sample_and_evaluate
from fsdiff.training import resolve_checkpoint

VARIANTS = {
    "single": [],
    "multilevel": ["multilevel.levels=[14, 28]", 'multilevel.schedule="coarse_to_fine"', "multilevel.fractions=[0.4, 0.6]"],
    "white": ['sde.covariance={type = "white", sigma = 0.0357}', "sde.allow_non_trace_class=true"],
    "no_precond": ['model.precondition="none"', "model.cond_channels=0", 'training.weighting="none"'],
}
SAMPLERS = [("em", 50, "uniform"), ("em", 200, "uniform"), ("pc", 25, "uniform"), ("pc", 100, "uniform"),
            ("ode", 12, "edm"), ("ode", 24, "edm"), ("ode_gauss", 6, "edm"), ("ode_gauss", 12, "edm"),
            ("ode_gauss", 24, "edm"), ("ode_gauss", 50, "edm")]


def train_variant(data: str, name: str, run_dir: Path, budget_s: float, extra: list[str] = ()) -> Path:
    from fsdiff.config import load_config
    from fsdiff.training import latest_checkpoint, train_from_config

    if latest_checkpoint(run_dir) is None:
        cfg = load_config(ROOT / "configs" / f"{data.replace('-', '_')}.toml",
                          VARIANTS[name] + list(extra) + [f"training.time_limit_s={budget_s}", f'name="{data}_{name}"'])
        train_from_config(cfg, run_dir, progress=False)
    return run_dir


def grid_figure(samples: dict, path: Path, title: str) -> None:
    rows = [(f"{N}²", [("", x[i, 0], fd.Grid((N, N))) for i in range(8)]) for N, x in samples.items()]
    fig = field_panels(rows, shared_color=True, cmap="gray", images=True)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--runs", nargs="*", default=[], metavar="NAME=PATH", help="evaluate these runs/files instead of training")
    p.add_argument("--budget-s", type=float, default=600.0, help="training wall-clock per variant")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--resolutions", type=int, nargs="+", default=[28, 56, 112])
    p.add_argument("--sampler-table", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work-dir", default=None, help="where variant runs live (default runs/)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: a few steps per variant, n = 8, 28² and 56²")
    args = p.parse_args(argv)
    extra: list[str] = []
    if args.quick:
        args.budget_s, args.n, args.resolutions = 3.0, 8, [28, 56]
        extra = ["training.steps=4", "training.batch_size=4", "training.eval_every=0", "training.n_val=4",
                 "model.stats_samples=64", "training.warmup_steps=1"]
        SAMPLERS[:] = [("em", 2, "uniform"), ("ode", 2, "edm")]
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or ROOT / "resolution_studies" / "results" / f"{args.data.replace('-', '_')}_quality")
    out.mkdir(parents=True, exist_ok=True)
    runs = dict(r.split("=", 1) for r in args.runs) if args.runs else {
        v: str(train_variant(args.data, v, Path(args.work_dir or ROOT / "runs") / f"quality_{args.data}_{v}", args.budget_s, extra))
        for v in args.variants}
    quality = ImageQuality(args.data)
    results, lines = {"data": args.data, "n": args.n, "variants": {}}, []
    for name, path in runs.items():
        model, sde, grid, cfg = fd.load_run(path)
        rows, samples = sample_and_evaluate(model, sde, quality, args.resolutions, n=args.n,
                                            steps=2 if args.quick else 24)
        for r in rows:
            r["label"] = name
        ck = torch.load(resolve_checkpoint(path), weights_only=True)
        results["variants"][name] = {"path": str(path), "train_wall_s": ck.get("metrics", {}).get("wall_s"),
                                     "step": ck.get("step"), "rows": rows}
        grid_figure(samples, out / f"samples_{name}.png", f"{args.data} {name}: same 8 draws at {args.resolutions}")
        lines.append(format_quality_table(rows))
        print(lines[-1], flush=True)
    if args.sampler_table:
        name, path = next(iter(runs.items()))
        model, sde, _, _ = fd.load_run(path)
        table = []
        for sampler, steps, tg in SAMPLERS:
            rows, _ = sample_and_evaluate(model, sde, quality, [28], n=args.n, sampler=sampler, steps=steps, time_grid=tg)
            rows[0]["label"] = f"{sampler} {steps} {tg}"
            table.append(rows[0])
            print(format_quality_table(rows[-1:]), flush=True)
        results["samplers"] = table
        lines.append("Samplers (28²):\n" + format_quality_table(table))
    write_json(out / "results.json", results)
    (out / "summary.md").write_text(f"# {args.data} quality (n = {args.n})\n\n```\n" + "\n\n".join(lines) + "\n```\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
