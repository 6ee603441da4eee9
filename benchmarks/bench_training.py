"""Training-step time of FNOScore against a plain-torch FNO and neuraloperator's FNO.

One step = zero_grad + forward + backward + AdamW step on an MSE (DSM-like) loss, at
28^2 and 64^2, batch 16 and 64. All three models have width 32, modes |k_i| <= 12,
4 Fourier layers and a 64-channel projection; the baselines get t as a constant input
channel, FNOScore per-sample FiLM. Steps of the three models are interleaved so machine
load hits them alike; medians are printed with ratios (FNOScore / baseline).

Usage::

    python benchmarks/bench_training.py [--reps 7] [--no-malloc-tuning] [--quick]

By default the script re-executes itself with glibc's malloc told to keep freed memory
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_), see DESIGN.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from fsdiff.app.runtime import MALLOC_ENV as _MALLOC_ENV


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=7, help="timed steps per model and case (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-malloc-tuning", action="store_true", help="run with the default allocator settings")
    p.add_argument("--quick", action="store_true", help="28^2 only, 3 reps (smoke test)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    return p.parse_args()


args = _parse()
if not args.no_malloc_tuning and any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC_ENV})

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fsdiff as fd  # noqa: E402
from fsdiff.models import FNOScore, NeuralopFNOScore  # noqa: E402


class PlainSpectralConv2d(nn.Module):
    """rfft2 -> kept modes packed contiguously -> batched complex matmul -> irfft2."""

    def __init__(self, width: int, K: int):
        super().__init__()
        self.K = K
        scale = 1.0 / (width * width)
        self.w = nn.Parameter(scale * torch.randn((2 * K + 1) * (K + 1), width, width, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, N1, N2 = x.shape
        K = self.K
        xh = torch.fft.rfft2(x, norm="forward")
        xp = torch.cat([xh[:, :, : K + 1, : K + 1], xh[:, :, -K:, : K + 1]], dim=2)  # (B, C, 2K+1, K+1)
        xp = xp.reshape(B, C, -1).permute(2, 0, 1)  # (M, B, C)
        yp = torch.bmm(xp, self.w).permute(1, 2, 0).reshape(B, C, 2 * K + 1, K + 1)
        out = torch.zeros(B, C, N1, N2 // 2 + 1, dtype=torch.cfloat)
        out[:, :, : K + 1, : K + 1] = yp[:, :, : K + 1]
        out[:, :, -K:, : K + 1] = yp[:, :, K + 1 :]
        return torch.fft.irfft2(out, s=(N1, N2), norm="forward")


class PlainFNO2d(nn.Module):
    """The FNO2d of the FNO / multilevel-diffusion papers, t as a constant input channel."""

    def __init__(self, width: int = 32, K: int = 12, n_layers: int = 4, proj: int = 64):
        super().__init__()
        self.fc0 = nn.Linear(2, width)
        self.convs = nn.ModuleList(PlainSpectralConv2d(width, K) for _ in range(n_layers))
        self.ws = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(n_layers))
        self.fc1 = nn.Linear(width, proj)
        self.fc2 = nn.Linear(proj, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, grid: fd.Grid) -> torch.Tensor:
        tt = t.reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        h = self.fc0(torch.cat([x, tt], 1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        for i, (conv, w) in enumerate(zip(self.convs, self.ws)):
            h = conv(h) + w(h)
            if i < len(self.convs) - 1:
                h = F.gelu(h)
        h = F.gelu(self.fc1(h.permute(0, 2, 3, 1)))
        return self.fc2(h).permute(0, 3, 1, 2)


def make_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "FNOScore": FNOScore(in_channels=1, width=32, modes=(12, 12), n_layers=4, projection_channels=64),
        "plain FNO2d": PlainFNO2d(width=32, K=12, n_layers=4, proj=64),
        "neuralop FNO": NeuralopFNOScore(in_channels=1, width=32, modes=(12, 12), n_layers=4),
    }


def bench_case(n: int, batch: int, reps: int, warmup: int) -> dict[str, float]:
    models = make_models()
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    grid = fd.Grid((n, n))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, n, n, generator=gen)
    t = torch.rand(batch, generator=gen)
    eta = torch.randn(batch, 1, n, n, generator=gen)

    def step(name: str) -> float:
        m, opt = models[name], opts[name]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = (m(x, t, grid) - eta).square().mean()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(warmup):
        for k in models:
            step(k)
    for _ in range(reps):
        for k in models:
            times[k].append(step(k))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = {k: os.environ.get(k, "unset") for k in _MALLOC_ENV}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, malloc: {malloc}")
    cases = [(28, 16), (28, 64)] if args.quick else [(28, 16), (28, 64), (64, 16), (64, 64)]
    reps = 3 if args.quick else args.reps
    print(f"{'grid':>6} {'batch':>5} | {'FNOScore':>9} {'plain':>9} {'neuralop':>9} | "
          f"{'FNOScore/plain':>14} {'FNOScore/neuralop':>17}   (median s/step, {reps} reps)")
    for n, b in cases:
        med = bench_case(n, b, reps, args.warmup)
        f, p, q = med["FNOScore"], med["plain FNO2d"], med["neuralop FNO"]
        print(f"{n:>4}^2 {b:>5} | {f:9.4f} {p:9.4f} {q:9.4f} | {f / p:14.2f} {f / q:17.2f}", flush=True)


if __name__ == "__main__":
    main()
