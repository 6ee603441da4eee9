"""Scaling: data-parallel throughput (1 against 2 gloo processes) and the step time by precision and device.

1. **Data parallel on CPU.** ``configs/synthetic.toml`` (32² U-shaped operator, batch 32), the same
   global batch on one process with one thread, one process with two threads, and two torchrun gloo
   processes with one thread each. Throughput is samples per second of training wall-clock (median
   step time from ``metrics.csv``, after ``--warmup`` steps); efficiency = 2-process throughput /
   (2 x 1-process-1-thread throughput).
2. **Precision.** The median training-step time of an FNO score operator at 64² and 256² in fp32 and
   in bf16 autocast (and, with ``--compile``, ``torch.compile`` at 64²), on ``--device`` (CPU here; CUDA
   on a GPU machine), with the relative difference of the bf16 loss.

Run: ``.venv/bin/python benchmarks/bench_distributed.py [--device auto] [--steps 40] [--compile]``;
writes ``benchmarks/results/distributed.txt`` and ``distributed.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _train(run_dir: Path, procs: int, threads: int, steps: int) -> list[float]:
    sets = [f"training.steps={steps}", "training.eval_every=0", "training.checkpoint_every=0",
            f"training.data_shards={procs}", "training.n_val=8", "model.stats_samples=256"]
    head = ([str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc-per-node={procs}", "-m", "fsdiff"]
            if procs > 1 else [sys.executable, "-m", "fsdiff"])
    cmd = [*head, "train", str(ROOT / "configs" / "synthetic.toml"), "--run-dir", str(run_dir), "--quiet",
           "--threads", str(threads), *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    with open(run_dir / "metrics.csv") as f:
        walls = [float(r["wall_s"]) for r in csv.DictReader(f)]
    return [b - a for a, b in zip(walls, walls[1:])]


def data_parallel(steps: int, warmup: int, batch: int = 32) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, procs, threads in (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
                                     ("2 gloo processes, 1 thread each", 2, 1)):
            dt = _train(Path(tmp) / f"p{procs}t{threads}", procs, threads, steps)[warmup:]
            med = statistics.median(dt)
            rows.append({"setup": name, "procs": procs, "threads": threads, "median_step_s": med,
                         "samples_per_s": batch / med})
            print(f"{name:34s} median step {med * 1e3:7.1f} ms  {batch / med:7.1f} samples/s", flush=True)
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["speedup"] = r["samples_per_s"] / base
    rows[2]["efficiency"] = rows[2]["samples_per_s"] / (2 * base)
    return rows


def precision(device: str, use_compile: bool, repeats: int = 6) -> list[dict]:
    import torch

    import fsdiff as fd
    from fsdiff.losses import dsm_loss
    from fsdiff.training import resolve_device

    dev = resolve_device(device)
    rows = []
    for N, batch in ((64, 16), (256, 4)):
        g = fd.Grid((N, N))
        sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=8.0))
        gen = torch.Generator().manual_seed(0)
        x0 = sde.covariance.sample(g, batch, 1, generator=gen).to(dev)
        modes = [("fp32", False), ("bf16", False)] + ([("fp32", True), ("bf16", True)] if use_compile and N == 64 else [])
        ref_loss = None
        for prec, comp in modes:
            torch.manual_seed(0)
            model = fd.FNOScore(in_channels=1, width=32, modes=(12, 12), n_layers=4).to(dev)
            fwd = torch.compile(model) if comp else model
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            times, losses = [], []
            for i in range(repeats + 2):
                step_gen = torch.Generator().manual_seed(i)
                t0 = time.perf_counter()
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                    loss = dsm_loss(fwd, x0, sde, g, generator=step_gen).mean()
                loss.backward()
                opt.step()
                opt.zero_grad()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                losses.append(float(loss.detach()))
            med = statistics.median(times[2:])
            if ref_loss is None:
                ref_loss = losses[0]
            row = {"N": N, "batch": batch, "precision": prec, "compile": comp, "device": str(dev),
                   "median_step_s": med, "samples_per_s": batch / med,
                   "first_loss_rel_diff": abs(losses[0] - ref_loss) / abs(ref_loss)}
            rows.append(row)
            print(f"{N:4d}² {prec} compile={comp!s:5s} on {dev}: median step {med * 1e3:8.1f} ms, "
                  f"{batch / med:7.1f} samples/s, first loss vs fp32 {row['first_loss_rel_diff']:.2e}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--skip-parallel", action="store_true")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1 if a.device == "cpu" else torch.get_num_threads())
    out = {"cpu_count": os.cpu_count(), "torch": torch.__version__}
    if not a.skip_parallel:
        out["data_parallel"] = data_parallel(a.steps, a.warmup)
    out["precision"] = precision(a.device, a.compile)
    lines = [f"# Scaling benchmark ({out['cpu_count']} CPU cores, torch {out['torch']})", ""]
    if "data_parallel" in out:
        lines += ["Data parallel, configs/synthetic.toml (32², batch 32), median step after warm-up:", "",
                  "| setup | median step ms | samples/s | speedup |", "|---|---|---|---|"]
        lines += [f"| {r['setup']} | {r['median_step_s'] * 1e3:.1f} | {r['samples_per_s']:.1f} | {r['speedup']:.2f} |"
                  for r in out["data_parallel"]]
        lines += ["", f"2-process efficiency: {out['data_parallel'][2]['efficiency']:.2f}"]
    lines += ["", "Precision (FNO width 32, 4 layers, |k| <= 12; one thread on CPU):", "",
              "| N | batch | precision | compile | device | median step ms | samples/s | first loss vs fp32 |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['N']} | {r['batch']} | {r['precision']} | {r['compile']} | {r['device']} | "
              f"{r['median_step_s'] * 1e3:.1f} | {r['samples_per_s']:.1f} | {r['first_loss_rel_diff']:.1e} |"
              for r in out["precision"]]
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if a.device == "cpu" else f"_{a.device}"
    (RESULTS / f"distributed{suffix}.txt").write_text("\n".join(lines) + "\n")
    (RESULTS / f"distributed{suffix}.json").write_text(json.dumps(out, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
