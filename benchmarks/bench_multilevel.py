"""Wall-clock to a 64² validation loss: multilevel schedules against single-level training.

Protocol (one process, same model, data, noise, optimiser and seeds for every schedule):

1. ``single``: train on 64² only for ``--budget`` seconds of training wall-clock, evaluating the
   EMA model's DSM loss on a fixed 64² validation set (fixed data, times and noise) every
   ``--eval-every`` steps. The target is its last validation loss.
2. ``coarse_to_fine`` (16² -> 32² -> 64², a fixed number of coarse steps, then 64²) and ``mlmc``
   (multilevel Monte Carlo estimate of the 64² loss) train until their 64² validation loss
   reaches the target, or the same budget runs out.
3. Report, per schedule, the training wall-clock (evaluation excluded) to the first evaluation at
   or below the target, and the ratio ``single / schedule`` (> 1: the schedule is faster).

The learning rate is constant after warm-up so that the stopping point does not change the
schedule. Run: ``python benchmarks/bench_multilevel.py`` (about 6-7 minutes on 2 CPU cores);
``--budget 20`` for a smoke run. Prints the malloc and thread settings it ran with.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import fsdiff as fd
from fsdiff.config import TrainingConfig
from fsdiff.data import LogNormalField
from fsdiff.models import FNOScore
from fsdiff.training.multilevel import MultilevelSchedule, hierarchy
from fsdiff.training import train_to_target
from fsdiff.app.runtime import tune_allocator


def run(kind: str, args, grids, data, sde, target: float | None, run_dir: Path) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FNOScore(width=args.width, modes=(args.modes, args.modes), n_layers=args.layers)
    steps = 100000  # never reached: runs stop on target or budget
    if kind == "coarse_to_fine":
        n16, n32 = args.c2f_steps
        fractions = [n16 / steps, n32 / steps, 1 - (n16 + n32) / steps]
    else:
        fractions = None
    sched = MultilevelSchedule(grids, kind, fractions=fractions, samples=args.mlmc_samples)
    cfg = TrainingConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup_steps=20, final_lr_ratio=1.0,
                         ema_decay=args.ema, grad_clip=1.0, n_val=args.n_val, eval_every=args.eval_every,
                         checkpoint_every=0, log_every=10 ** 9, seed=0)
    return train_to_target(model, sde, data, sched, cfg, run_dir, target, args.budget)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=110.0, help="training seconds per schedule (default 110)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.98)
    p.add_argument("--n-val", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--c2f-steps", type=int, nargs=2, default=[300, 200], help="steps on 16² and 32² before 64²")
    p.add_argument("--mlmc-samples", type=int, nargs=3, default=[64, 16, 4], help="samples on 16², 32², 64²")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--json", type=str, default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = tune_allocator()

    grids = hierarchy(fd.Grid((64, 64)), [16, 32, 64])
    data = LogNormalField(fd.Matern(alpha=2.0, tau=4.0, sigma=12.0), max_mode=10, standardize=True)
    sde = fd.VPSDE(fd.Matern(alpha=2.0, tau=3.0, sigma=8.0))
    print(f"bench_multilevel: torch {torch.__version__}, {platform.machine()}, threads={args.threads}, malloc: {malloc}")
    print(f"model FNOScore(width={args.width}, modes={args.modes}, layers={args.layers}), batch {args.batch}, "
          f"data {data.kind}, levels 16/32/64, budget {args.budget:.0f} s per schedule")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        base = run("single", args, grids, data, sde, None, Path(tmp) / "single")
        target = base["curve"][-1][2]
        base["hit"] = next({"wall_s": w, "step": s, "val": v} for w, s, v in base["curve"] if v <= target)
        results["single"] = base
        print(f"single: {base['steps']} steps, target val_loss_64 = {target:.4f} first reached at "
              f"{base['hit']['wall_s']:.1f} s ({time.perf_counter() - t0:.0f} s incl. evaluation)")
        for kind in ("coarse_to_fine", "mlmc"):
            t0 = time.perf_counter()
            results[kind] = run(kind, args, grids, data, sde, target, Path(tmp) / kind)
            r = results[kind]
            best = min(v for _, _, v in r["curve"])
            print(f"{kind}: {r['steps']} steps, best val_loss_64 {best:.4f}, "
                  f"{'reached target at %.1f s' % r['hit']['wall_s'] if r['hit'] else 'did NOT reach the target'} "
                  f"({time.perf_counter() - t0:.0f} s incl. evaluation)")
    print("\nschedule         time-to-target [s]   speed-up vs single   samples seen per level (16/32/64)   train s per level")
    t_single = results["single"]["hit"]["wall_s"]
    for kind, r in results.items():
        lv = r["levels"]
        samples = "/".join(str(lv[k]["samples"]) for k in ("16", "32", "64"))
        walls = "/".join(f"{lv[k]['wall_s']:.0f}" for k in ("16", "32", "64"))
        if r["hit"]:
            tt, ratio = f"{r['hit']['wall_s']:.1f}", f"{t_single / r['hit']['wall_s']:.2f}x"
        else:
            tt, ratio = f"> {r['wall_s']:.0f}", f"< {t_single / r['wall_s']:.2f}x"
        print(f"{kind:16s} {tt:>18s}   {ratio:>18s}   {samples:>33s}   {walls:>17s}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "malloc": malloc, "target": target,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
