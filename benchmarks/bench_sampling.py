"""Benchmark: sampler throughput with a small FNOScore, and the coarse-to-fine speed-up.

1. Fields per second of ``sample`` for each sampler ("em", "pc", "ode", "ode_adaptive") at 64²
   and 128² with an (untrained) ``FNOScore(in_channels=1, width=32, modes=(12, 12), n_layers=4)``
   at a fixed small step count; throughput scales as 1 / (score evaluations), so the table also
   gives seconds per field per evaluation (``s/field/nfe``), the number to extrapolate from.
2. ``sample_coarse_to_fine`` on 32² -> 64² -> 128² (switches at t = (0.5, 0.2) and (0.3, 0.1))
   against single-level 128² EM at the same step count, timed round-robin. Target: >= 2x.
   With costs proportional to N² the ideal speed-ups are 2.9x and 4.0x; the FNO's fixed costs
   (lifting, channel mixing, 12 kept modes) make coarse evaluations less than 16x cheaper.

If ``fsdiff.models.FNOScore`` cannot be imported, the exact Gaussian oracle is timed instead and
every line says so.

Run: ``python benchmarks/bench_sampling.py [--quick]`` (< 5 minutes on 2 CPU cores). Prints medians.
"""

from __future__ import annotations

import argparse

from _common import header, interleaved, median, set_malloc, timeit  # noqa: E402

set_malloc()

import torch  # noqa: E402

import fsdiff as fd  # noqa: E402
from fsdiff.oracles import GaussianScore  # noqa: E402
from fsdiff.sampling import sample, sample_coarse_to_fine  # noqa: E402


def make_model(sde):
    try:
        from fsdiff.models import FNOScore

        torch.manual_seed(0)
        net = FNOScore(in_channels=1, width=32, modes=(12, 12), n_layers=4).eval()
        return net, "FNOScore(width=32, modes=(12,12), n_layers=4), untrained"
    except Exception as e:  # noqa: BLE001 - fallback is the documented behaviour
        return GaussianScore(sde, fd.Matern(2.5, 5.0)), f"ORACLE FALLBACK (FNOScore unavailable: {e!r})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    args = ap.parse_args()
    sde = fd.VPSDE(fd.Matern(2.0, 3.0))
    model, label = make_model(sde)
    header("sampling throughput")
    print(f"# model: {label}")
    steps = 3 if args.quick else 5
    plan = {64: (8, 1), 128: (4, 1)}  # N -> (fields per run, repeats)
    print(f"# steps = {steps} (uniform), eps = 1e-3, ode_adaptive rtol = atol = 1e-2, denoise on")
    print(f"{'grid':>8} {'sampler':>13} {'n':>3} {'nfe':>4} {'median s':>9} {'fields/s':>9} {'s/field/nfe':>12}")
    with torch.no_grad():
        model(torch.zeros(2, 1, 64, 64), torch.full((2,), 0.5), fd.Grid((64, 64)))  # one-time initialisation outside the timings
    for N, (n, reps) in plan.items():
        g = fd.Grid((N, N))
        for name in ("em", "pc", "ode", "ode_adaptive"):
            info = {}

            def run():
                _, inf = sample(model, sde, g, n, sampler=name, steps=steps, generator=torch.Generator().manual_seed(0),
                                rtol=1e-2, atol=1e-2, return_info=True)
                info.update(inf)

            t = median(timeit(run, repeats=1 if name == "ode_adaptive" else reps, warmup=0))
            print(f"{N:>5}^2 {name:>13} {n:>3} {info['nfe']:>4} {t:>9.2f} {n / t:>9.3f} {t / n / info['nfe']:>12.4f}", flush=True)

    # coarse-to-fine vs single level at 128², equal step count
    n, c2f_steps = 4, (10 if args.quick else 20)
    grids = [fd.Grid((32, 32)), fd.Grid((64, 64)), fd.Grid((128, 128))]

    def single():
        return sample(model, sde, grids[-1], n, sampler="em", steps=c2f_steps, generator=torch.Generator().manual_seed(1))

    schedules = {"c2f [0.5, 0.2]": [0.5, 0.2], "c2f [0.3, 0.1]": [0.3, 0.1]}
    fns = {"single": single}
    infos = {}
    for name, sw in schedules.items():
        fns[name] = (lambda sw=sw: sample_coarse_to_fine(model, sde, grids, sw, n, sampler="em", steps=c2f_steps,
                                                         generator=torch.Generator().manual_seed(1)))
        infos[name] = sample_coarse_to_fine(model, sde, grids, sw, 1, sampler="em", steps=c2f_steps,
                                            generator=torch.Generator().manual_seed(1), return_info=True)[1]
    times = interleaved(fns, repeats=1 if args.quick else 2, warmup=0)
    ts = median(times["single"])
    print(f"\n# coarse-to-fine 32^2 -> 64^2 -> 128^2 vs single-level 128^2, EM {c2f_steps} uniform steps, n = {n}")
    print(f"single-level 128^2: {ts:.2f} s ({c2f_steps + 1} evaluations at 128^2)")
    for name in schedules:
        tc = median(times[name])
        print(f"{name}: {tc:.2f} s, evaluations per level {infos[name]['nfe_per_level']}, "
              f"speed-up {ts / tc:.2f}x (target >= 2x)")

if __name__ == "__main__":
    main()
