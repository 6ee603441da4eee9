"""Benchmark: drawing trace-class noise fields, as ratios against baselines measured in the same run.

1. ``Matern(2, 3).sample`` (nested, shell-ordered draws) of 256 fields at 64², 128², 256², against
   the *floor*: drawing standard normals for an rfft spectrum of the same shape plus a bare
   ``torch.fft.irfft2``. Target: <= 1.2x.
2. Against dense-Cholesky GP sampling as peers do it: kernel matrix of the same covariance on the
   N² points, Cholesky with jitter, one matrix-vector product per draw (factorisation included)
   at 32² and 64². Target: >= 100x slower than the FFT sampler at 64².

Run: ``python benchmarks/bench_noise.py [--quick]``. Prints medians over repeats (and the ratio of the
fastest repeats, which is less sensitive to other processes on a shared machine). The Cholesky peer is
timed for fewer draws at 64² (32): its factorisation once plus 224 more matvecs measured per draw.
"""

from __future__ import annotations

import argparse

from _common import header, interleaved, median, set_malloc, timeit  # noqa: E402

set_malloc()

import torch  # noqa: E402

import fsdiff as fd  # noqa: E402


def floor_fn(n: int, N: int, gen: torch.Generator):
    def run():
        z = torch.empty(n, 1, N, N // 2 + 1, 2).normal_(generator=gen)
        return torch.fft.irfft2(torch.view_as_complex(z), s=(N, N), norm="forward")

    return run


def kernel_matrix(C: fd.Covariance, grid: fd.Grid) -> torch.Tensor:
    """Covariance function ``c(x - y) = sum_kept lambda_k cos(2 pi k.(x-y)) / |D|`` on all point pairs, float64."""
    # the covariance function on the grid (a periodic function of the lag), then gathered per pair
    c = grid.irfft(C.eigenvalues(grid).to(torch.complex128) / grid.volume)  # (N, N): c(lag)
    idx = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid.shape), indexing="ij"), -1).reshape(-1, grid.ndim)
    lag = (idx[:, None, :] - idx[None, :, :]) % torch.tensor(grid.shape)
    return c[tuple(lag[..., i] for i in range(grid.ndim))]


def cholesky_fn(C: fd.Covariance, grid: fd.Grid, n: int, gen: torch.Generator):
    def run():
        K = kernel_matrix(C, grid)
        K.diagonal().add_(1e-8 * float(K.diagonal().mean()))
        Lc = torch.linalg.cholesky(K)
        out = torch.empty(n, K.shape[0], dtype=torch.float64)
        for i in range(n):  # one matrix-vector product per draw
            out[i] = Lc @ torch.randn(K.shape[0], generator=gen, dtype=torch.float64)
        return out.reshape(n, 1, *grid.shape)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 9
    header("bench_noise: Matern(2, 3).sample vs floor (normals + irfft2) vs dense Cholesky")
    C = fd.Matern(alpha=2.0, tau=3.0)
    n = 256
    gen = torch.Generator().manual_seed(0)
    fft_times = {}
    print(f"\n{'grid':>8} {'n':>5} {'sample ms':>10} {'floor ms':>10} {'ratio':>7} {'ratio of mins':>14}   (median of {reps}, interleaved)")
    for N in (64, 128, 256):
        g = fd.Grid((N, N))
        t = interleaved({"sample": lambda: C.sample(g, n, generator=gen), "floor": floor_fn(n, N, gen)}, repeats=reps)
        ms, mf = median(t["sample"]), median(t["floor"])
        ratios = sorted(a / b for a, b in zip(t["sample"], t["floor"]))
        fft_times[N] = ms
        print(f"{N:>5}^2 {n:>5} {1e3 * ms:>10.2f} {1e3 * mf:>10.2f} {ms / mf:>7.2f} {min(t['sample']) / min(t['floor']):>14.2f}   "
              f"(per-repeat ratios: min {ratios[0]:.2f}, median {median(ratios):.2f}, max {ratios[-1]:.2f})")

    print(f"\n{'grid':>8} {'draws':>5} {'cholesky s':>11} {'per draw ms':>12} {'fft per draw ms':>16} {'speed-up':>9}")
    for N, draws, creps in ((32, 256, 3), (64, 32, 1)):
        g = fd.Grid((N, N))
        tc = median(timeit(cholesky_fn(C, g, draws, gen), repeats=creps, warmup=0 if N == 64 else 1))
        # the factorisation is paid once per batch: compare the cost of 256 draws
        # (Cholesky at 64^2: times `draws` draws and adds the matvecs of the rest, measured per draw)
        if draws < n:
            tmv = median(timeit(cholesky_matvec_fn(C, g, draws, gen), repeats=3))
            tc_n = tc + (n - draws) * tmv / draws
        else:
            tc_n = tc
        tf = fft_times.get(N) or median(timeit(lambda: C.sample(g, n, generator=gen), repeats=reps))
        print(f"{N:>5}^2 {draws:>5} {tc:>11.3f} {1e3 * tc_n / n:>12.3f} {1e3 * tf / n:>16.4f} {tc_n / tf:>8.0f}x"
              f"   (256 draws; factorisation included)")


def cholesky_matvec_fn(C: fd.Covariance, grid: fd.Grid, draws: int, gen: torch.Generator):
    K = kernel_matrix(C, grid)
    K.diagonal().add_(1e-8 * float(K.diagonal().mean()))
    Lc = torch.linalg.cholesky(K)

    def run():
        for _ in range(draws):
            Lc @ torch.randn(K.shape[0], generator=gen, dtype=torch.float64)

    return run


if __name__ == "__main__":
    main()
