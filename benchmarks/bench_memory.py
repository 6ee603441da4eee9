"""Peak memory of sampling against the grid size N and the chunk size, and the bound ``--max-memory`` keeps.

Each configuration runs in a fresh process; its peak is the rise of the resident-set high-water mark
(``ru_maxrss``) from just before sampling to the end, so the model, torch and the data are not
counted. Model: the shipped MNIST score operator (``pretrained/mnist.pt``), Euler-Maruyama, a few
steps (memory does not grow with the number of steps).

Fits, per N, ``peak = a n N² + b chunk N²`` (state and Heun/EM temporaries, and the network's
activations of one chunk) by least squares, then checks the bound: 64 fields at 512² with the chunk
chosen by :func:`fsdiff.sampling.chunk_size_for` for ``--max-memory 4G``, against the same 64
fields in one chunk.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--quick]``; writes ``benchmarks/results/memory.txt``
and ``memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = Path(__file__).resolve().parents[1] / "pretrained" / "mnist.pt"


def child(N: int, n: int, chunk: int | None, steps: int, max_memory: str | None) -> dict:
    import torch

    import fsdiff as fd
    from fsdiff.sampling import chunk_size_for, parse_memory
    from fsdiff.training import load_run

    torch.set_num_threads(1)
    model, sde, _, _ = load_run(MODEL)
    grid = fd.Grid((N, N))
    if max_memory is not None:
        chunk = chunk_size_for(model, grid, n, 1, parse_memory(max_memory))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    x = fd.sample(model, sde, grid, n, sampler="em", steps=steps, chunk_size=chunk,
                  generator=torch.Generator().manual_seed(0))
    wall = time.perf_counter() - t0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    return {"N": N, "n": n, "chunk": chunk, "steps": steps, "peak_bytes": peak, "wall_s": wall,
            "finite": bool(torch.isfinite(x).all())}


def run_child(**kw) -> dict:
    args = [sys.executable, __file__, "--child", json.dumps(kw)]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="64² and 128² only, no 512² check")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(**json.loads(a.child))))
        return 0
    import numpy as np

    from fsdiff.sampling.memory import BYTES_PER_ACTIVATION

    sizes = (64, 128) if a.quick else (64, 128, 256, 512)
    rows, fits = [], {}
    for N in sizes:
        mine = [run_child(N=N, n=16, chunk=c, steps=2, max_memory=None) for c in (1, 4, 16)]
        rows += mine
        A = np.array([[r["n"] * N * N, r["chunk"] * N * N] for r in mine], dtype=float)
        y = np.array([r["peak_bytes"] for r in mine], dtype=float)
        (a_, b_), *_ = np.linalg.lstsq(A, y, rcond=None)
        fits[N] = {"state_bytes_per_point": a_, "chunk_bytes_per_point": b_}
        print(f"N={N:4d}: " + ", ".join(f"chunk {r['chunk']:2d}: {r['peak_bytes'] / 2**20:8.1f} MiB" for r in mine)
              + f"  -> {a_:.1f} B per state point, {b_:.1f} B per chunk point", flush=True)
    check = []
    if not a.quick:
        for kw in ({"chunk": 64, "max_memory": None}, {"chunk": None, "max_memory": "4G"}):
            r = run_child(N=512, n=64, steps=4, **kw)
            check.append({**r, "max_memory": kw["max_memory"]})
            print(f"64 fields at 512², {'--max-memory 4G' if kw['max_memory'] else 'one chunk of 64'}: chunk {r['chunk']}, "
                  f"peak {r['peak_bytes'] / 2**30:.2f} GiB, {r['wall_s']:.0f} s, finite {r['finite']}", flush=True)
    lines = ["# Sampling memory (pretrained/mnist.pt, EM, fresh process per row; peak = rise of ru_maxrss)", "",
             "| N | n | chunk | peak MiB | wall s |", "|---|---|---|---|---|"]
    lines += [f"| {r['N']} | {r['n']} | {r['chunk']} | {r['peak_bytes'] / 2**20:.1f} | {r['wall_s']:.2f} |" for r in rows]
    lines += ["", "Least-squares fit peak = a n N² + b chunk N² (bytes per grid point):", "",
              "| N | a (state, per field) | b (network, per chunk element) |", "|---|---|---|"]
    lines += [f"| {N} | {f['state_bytes_per_point']:.1f} | {f['chunk_bytes_per_point']:.1f} |" for N, f in fits.items()]
    lines += ["", f"chunk_size_for assumes {BYTES_PER_ACTIVATION} bytes per point and activation channel of the network."]
    if check:
        lines += ["", "| 64 fields at 512² | chunk | peak GiB | wall s |", "|---|---|---|---|"]
        lines += [f"| {'--max-memory 4G' if r['max_memory'] else 'one chunk'} | {r['chunk']} | "
                  f"{r['peak_bytes'] / 2**30:.2f} | {r['wall_s']:.0f} |" for r in check]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.txt").write_text("\n".join(lines) + "\n")
    (RESULTS / "memory.json").write_text(json.dumps({"rows": rows, "fits": {str(k): v for k, v in fits.items()},
                                                     "check": check}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
