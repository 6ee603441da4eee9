"""Wall-clock to equal finest-level (64²) validation loss: single-level vs multilevel schedules.

What it shows
-------------
The same FNOScore, data (standardised log-normal functions), noise (Matérn), optimiser and
seeds, trained with the four schedules of :mod:`fsdiff.training.multilevel` on the hierarchy
16² -> 32² -> 64²:

* ``single``: 64² every step, for ``--budget`` seconds of training wall-clock; its last
  validation loss on the fixed 64² validation set (fixed data, times, noise) is the target;
* ``coarse_to_fine``: fixed numbers of steps at 16² and 32² (``--c2f-steps``), then 64²;
* ``random``: a level drawn per step with probabilities ``--probabilities`` (16/32/64);
* ``mlmc``: the multilevel Monte Carlo estimate of the 64² loss (coupled differences,
  ``--mlmc-samples`` per level).

Each multilevel schedule trains until its 64² validation loss reaches the target (or the same
budget runs out); the table reports the training wall-clock (evaluation excluded) to the
first evaluation at or below the target and the speed-up ``single / schedule``. The learning
rate is constant after warm-up so that stopping does not change the schedule. This is the
protocol of ``benchmarks/bench_multilevel.py`` extended to all four schedules. Wall-clock on a
shared machine is noisy: the per-level sample counts are printed too.

Runtime on 2 CPU cores (1 thread): ~8 min (4 x ``--budget`` 90 s of training plus
evaluation). Defaults: FNOScore width 16, modes 8, 3 layers, batch 32, lr 2e-3, EMA 0.98,
validation every 20 steps on 32 functions.

Outputs (``results/multilevel_cost/``): ``multilevel_cost.nc`` (validation curves),
``multilevel_cost.png``, ``summary.md``.

Run: ``python resolution_studies/multilevel_cost.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from _common import fd, md_table, parser, setup, write_netcdf, write_text

STUDY = "multilevel_cost"
SCHEDULES = ("single", "coarse_to_fine", "random", "mlmc")


def run(kind: str, args, grids, data, sde, target: float | None, run_dir) -> dict:
    """Train one schedule until the target (or the budget); returns its validation curve."""
    import shutil

    from fsdiff.config import TrainingConfig
    from fsdiff.models import FNOScore
    from fsdiff.training.multilevel import MultilevelSchedule
    from fsdiff.training import train_to_target

    if run_dir.exists():
        shutil.rmtree(run_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = FNOScore(width=args.width, modes=(args.modes, args.modes), n_layers=args.layers)
    steps = 100000  # never reached: runs stop on target or budget
    fractions = None
    if kind == "coarse_to_fine":
        n0, n1 = args.c2f_steps
        fractions = [n0 / steps, n1 / steps, 1 - (n0 + n1) / steps]
    sched = MultilevelSchedule(grids, kind, fractions=fractions, probabilities=args.probabilities,
                               samples=args.mlmc_samples)
    cfg = TrainingConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup_steps=20, final_lr_ratio=1.0,
                         ema_decay=args.ema, grad_clip=1.0, n_val=args.n_val, eval_every=args.eval_every,
                         checkpoint_every=0, log_every=10**9, seed=args.seed)
    return train_to_target(model, sde, data, sched, cfg, run_dir, target, args.budget)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, STUDY)
    p.add_argument("--budget", type=float, default=90.0, help="training seconds per schedule")
    p.add_argument("--levels", type=int, nargs=3, default=[16, 32, 64])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.98)
    p.add_argument("--n-val", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--c2f-steps", type=int, nargs=2, default=[300, 200], help="steps on levels 0 and 1 first")
    p.add_argument("--probabilities", type=float, nargs=3, default=[0.4, 0.3, 0.3])
    p.add_argument("--mlmc-samples", type=int, nargs=3, default=[64, 16, 4])
    args = p.parse_args(argv)
    if args.quick:
        args.budget, args.levels, args.width, args.modes, args.layers = 2.0, [8, 16, 32], 4, 3, 1
        args.batch, args.n_val, args.eval_every, args.c2f_steps, args.mlmc_samples = 8, 8, 5, [5, 5], [8, 4, 2]
    env = setup(args)
    import xarray as xr

    from fsdiff.data import LogNormalField
    from fsdiff.training.multilevel import hierarchy
    from fsdiff.plotting import save_figure

    t_all = time.perf_counter()
    grids = hierarchy(fd.Grid((args.levels[-1],) * 2), args.levels)
    data = LogNormalField(fd.Matern(alpha=2.0, tau=4.0, sigma=12.0), max_mode=10, standardize=True)
    sde = fd.VPSDE(fd.Matern(alpha=2.0, tau=3.0, sigma=8.0))
    results: dict[str, dict] = {}
    base = run("single", args, grids, data, sde, None, args.work_dir / "single")
    target = base["curve"][-1][2]
    base["hit"] = next({"wall_s": w, "step": s, "val": v} for w, s, v in base["curve"] if v <= target)
    results["single"] = base
    print(f"single: {base['steps']} steps, target val_loss_{args.levels[-1]} = {target:.4f}", flush=True)
    for kind in SCHEDULES[1:]:
        results[kind] = run(kind, args, grids, data, sde, target, args.work_dir / kind)
        r = results[kind]
        print(f"{kind}: {r['steps']} steps, best {min(v for *_, v in r['curve']):.4f}, "
              f"{'hit at %.1f s' % r['hit']['wall_s'] if r['hit'] else 'missed the target'}", flush=True)

    L = max(len(r["curve"]) for r in results.values())
    wall = np.full((len(SCHEDULES), L), np.nan)
    val = np.full((len(SCHEDULES), L), np.nan)
    stp = np.full((len(SCHEDULES), L), np.nan)
    for i, k in enumerate(SCHEDULES):
        c = np.array(results[k]["curve"], dtype=float)
        wall[i, : len(c)], stp[i, : len(c)], val[i, : len(c)] = c[:, 0], c[:, 1], c[:, 2]
    t_single = results["single"]["hit"]["wall_s"]
    tt = np.array([results[k]["hit"]["wall_s"] if results[k]["hit"] else np.nan for k in SCHEDULES])
    names = [str(g.shape[0]) for g in grids]
    samples = np.array([[results[k]["levels"][n]["samples"] for n in names] for k in SCHEDULES], dtype=float)
    ds = xr.Dataset(
        {"wall_s": (("schedule", "eval"), wall), "step": (("schedule", "eval"), stp),
         "val_loss_finest": (("schedule", "eval"), val), "time_to_target_s": (("schedule",), tt),
         "speedup_vs_single": (("schedule",), t_single / tt), "samples_seen": (("schedule", "level"), samples)},
        coords={"schedule": list(SCHEDULES), "eval": np.arange(L), "level": [int(n) for n in names]},
        attrs={"env": env, "target": target, "budget_s": args.budget, "levels": str(args.levels),
               "note": "time_to_target NaN: the schedule did not reach the target within the budget"})
    write_netcdf(args.out / f"{STUDY}.nc", ds)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, k in enumerate(SCHEDULES):
        ax.plot(wall[i], val[i], "-", label=k)
    ax.axhline(target, color="k", ls=":", lw=1, label="target (single, end of budget)")
    ax.set_yscale("log")
    ax.set_xlabel("training wall-clock [s]")
    ax.set_ylabel(f"validation DSM loss at {args.levels[-1]}²")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, args.out / f"{STUDY}.png")

    rows = []
    for i, k in enumerate(SCHEDULES):
        r = results[k]
        rows.append([k, f"{tt[i]:.1f}" if np.isfinite(tt[i]) else f"> {r['wall_s']:.0f} (missed)",
                     f"{t_single / tt[i]:.2f}x" if np.isfinite(tt[i]) else f"< {t_single / r['wall_s']:.2f}x",
                     r["steps"], min(v for *_, v in r["curve"]), "/".join(str(int(s)) for s in samples[i])])
    table = md_table(["schedule", "time to target [s]", "speed-up vs single", "steps", "best val loss",
                      f"samples seen ({'/'.join(names)})"], rows)
    summary = (f"# multilevel_cost: wall-clock to equal {args.levels[-1]}² validation loss\n\n{env}. Budget "
               f"{args.budget:.0f} s per schedule; target {target:.4f} (single's last validation loss). "
               f"Total {time.perf_counter() - t_all:.0f} s.\n\n{table}\n\n![curves]({STUDY}.png)\n")
    write_text(args.out / "summary.md", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
