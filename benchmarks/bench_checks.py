"""Benchmark: the cost of fsdiff's finiteness check at the entry points, as ratios measured in the same run.

``fsdiff._checks.check_finite`` (one sum; a finite sum implies finite entries) against the obvious
``torch.isfinite(x).all()`` and against one ``rfft2`` of the same tensor (the cheapest thing every
checked entry point does anyway), for batches of 64 fields at 28², 112² and 256², one thread.

Run: ``python benchmarks/bench_checks.py``. Prints medians of 21 interleaved repeats.
"""

from __future__ import annotations

from _common import header, interleaved, median, set_malloc  # noqa: E402

set_malloc()

import torch  # noqa: E402

from fsdiff._checks import check_finite  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    header("finiteness check: fsdiff (one sum) vs isfinite().all() vs one rfft2, 64 fields, 1 thread")
    print(f"{'grid':>6} {'check_finite ms':>16} {'isfinite.all ms':>16} {'rfft2 ms':>9} {'isfinite/ours':>14} {'ours/rfft2':>11}")
    for n in (28, 112, 256):
        x = torch.randn(64, 1, n, n, generator=torch.Generator().manual_seed(0))
        t = interleaved({"ours": lambda: check_finite(x, "x"), "isfinite": lambda: bool(torch.isfinite(x).all()),
                         "rfft": lambda: torch.fft.rfft2(x)}, repeats=21, warmup=2)
        ours, full, fft = (median(t[k]) * 1e3 for k in ("ours", "isfinite", "rfft"))
        print(f"{n:>5}² {ours:>16.3f} {full:>16.3f} {fft:>9.3f} {full / ours:>13.1f}x {ours / fft:>10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
