"""Benchmark: fsdiff's MNIST recipe against an equal-time pixel-space DDPM (issue 11, item 8).

The baseline is the standard recipe of Ho et al. (2020), written here in ~100 lines: a small
U-Net (GroupNorm, SiLU, sinusoidal time embedding, 32/64/64 channels, two poolings, zero padding),
epsilon prediction, white Gaussian noise, a linear beta from 1e-4 to 0.02 over 1000 steps,
Adam with warm-up and EMA 0.999, trained on raw MNIST pixels scaled to [-1, 1] for the *same
wall-clock and thread count* as fsdiff's recipe, and sampled with deterministic DDIM (50 steps,
x0 clipped to [-1, 1]). It lives on the 28² pixel grid only: at 56² and 112² it can only
upsample its 28² samples, by Fourier zero-padding and by bicubic interpolation; both are shown.

fsdiff's model (a run directory or a ``pretrained/*.pt`` file) is sampled with its default
sampler at 28², 56² and 112² (one seed: nested draws), and both are measured with the same
:class:`fsdiff.eval.quality.ImageQuality` (independent classifier, FD against the real-data floor at
the same n, power beyond |k| = 13).

Run::

    python benchmarks/bench_quality.py train --budget-s 3300 --out runs/ddpm-baseline   # ~55 min, 1 thread
    python benchmarks/bench_quality.py evaluate --ddpm runs/ddpm-baseline/ddpm.pt \
        --fsdiff pretrained/mnist.pt --n 512 --out benchmarks/results/quality

    python benchmarks/bench_quality.py curve runs/pretrained-mnist --n 256   # time to the 28² targets
    python benchmarks/bench_quality.py speed --fsdiff pretrained/mnist.pt --n 64   # 64 digits at 28², 56², 112²

``evaluate`` prints the side-by-side table and writes ``quality.md``, ``quality.json`` and
``samples.png`` (grey-scale: DDPM draws, then fsdiff's at each resolution) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from _common import set_malloc  # noqa: E402

set_malloc()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

T_STEPS = 1000


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], 1)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(emb, cout)
        self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x))) + self.t(e)[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class SmallUNet(nn.Module):
    """Pixel-space epsilon network ``(B, 1, 28, 28), t (B,) in [0, 999] -> (B, 1, 28, 28)``."""

    def __init__(self, ch=(32, 64, 64), emb: int = 128):
        super().__init__()
        self.emb = emb
        self.t = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(1, ch[0], 3, padding=1)
        self.d = nn.ModuleList([_Block(ch[0], ch[0], emb), _Block(ch[0], ch[1], emb), _Block(ch[1], ch[2], emb)])
        self.mid = _Block(ch[2], ch[2], emb)
        self.u = nn.ModuleList([_Block(2 * ch[2], ch[1], emb), _Block(2 * ch[1], ch[0], emb), _Block(2 * ch[0], ch[0], emb)])
        self.out = nn.Sequential(nn.GroupNorm(8, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 1, 3, padding=1))

    def forward(self, x, t):
        e = self.t(_time_embedding(t, self.emb))
        h = self.inp(x)
        skips = []
        for i, blk in enumerate(self.d):
            h = blk(h, e)
            skips.append(h)
            if i < 2:
                h = F.avg_pool2d(h, 2)  # 28 -> 14 -> 7
        h = self.mid(h, e)
        for i, blk in enumerate(self.u):
            h = blk(torch.cat([h, skips.pop()], 1), e)
            if i < 2:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.out(h)


def _alphas_bar() -> torch.Tensor:
    beta = torch.linspace(1e-4, 0.02, T_STEPS, dtype=torch.float64)
    return torch.cumprod(1 - beta, 0)


def train_ddpm(budget_s: float, out: Path, batch: int = 64, lr: float = 1e-3, seed: int = 0, threads: int = 1) -> dict:
    """Train the baseline for ``budget_s`` wall-clock seconds; writes ``out/ddpm.pt`` (plain tensors)."""
    from fsdiff.data.mnist import load_mnist

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = load_mnist("train")[0] * 2 - 1
    net = SmallUNet()
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr)
    ab = _alphas_bar().float()
    t0, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < budget_s:
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 200)
        x0 = x_all[torch.randint(len(x_all), (batch,), generator=g)]
        t = torch.randint(T_STEPS, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = ab[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].mul_(0.999).add_(v, alpha=0.001) if v.is_floating_point() else ema[k].copy_(v)
        losses.append(loss.item())
        step += 1
        if step % 500 == 0:
            print(f"step {step}  loss(500-mean) {sum(losses[-500:]) / 500:.4f}  {time.perf_counter() - t0:.0f} s", flush=True)
    record = {"steps": step, "wall_s": time.perf_counter() - t0, "batch": batch, "lr": lr, "threads": threads,
              "params": sum(p.numel() for p in net.parameters()), "final_loss": sum(losses[-500:]) / max(1, len(losses[-500:]))}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "ddpm.pt.tmp"
    torch.save({"ema": ema, "record": record}, tmp)
    tmp.replace(out / "ddpm.pt")
    print(json.dumps(record))
    return record


@torch.no_grad()
def ddim_sample(net: nn.Module, n: int, steps: int = 50, seed: int = 0, chunk: int = 128) -> torch.Tensor:
    """Deterministic DDIM samples ``(n, 1, 28, 28)`` in [0, 1] (x0 prediction clipped to [-1, 1])."""
    ab = _alphas_bar()
    ts = torch.linspace(T_STEPS - 1, 0, steps).round().long()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, chunk):
        x = torch.randn(min(chunk, n - i), 1, 28, 28, generator=g, dtype=torch.float64)
        for j, t in enumerate(ts):
            a = ab[t]
            eps = net(x.float(), t.repeat(len(x))).double()
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            a_next = ab[ts[j + 1]] if j + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        out.append(((x + 1) / 2).float())
    return torch.cat(out)


def _upsample(x: torch.Tensor, N: int, how: str) -> torch.Tensor:
    from fsdiff.grid import Grid, resample

    if N == 28:
        return x
    if how == "fourier":
        return resample(x, Grid((28, 28)), Grid((N, N)))
    # bicubic on the cell-centred pixel grid (align_corners=False)
    return F.interpolate(x, size=(N, N), mode="bicubic", align_corners=False)


def evaluate(ddpm: Path, fsdiff_model: str, n: int, out: Path, resolutions=(28, 56, 112), seed: int = 0,
             threads: int = 2) -> list[dict]:
    from fsdiff.grid import Grid
    from fsdiff.eval.quality import ImageQuality, format_quality_table, sample_and_evaluate
    from fsdiff.training import load_run
    from fsdiff.plotting import field_panels, save_figure

    torch.set_num_threads(threads)
    quality = ImageQuality("mnist")
    ck = torch.load(ddpm, weights_only=True)
    net = SmallUNet()
    net.load_state_dict(ck["ema"])
    net.eval()
    t0 = time.perf_counter()
    x28 = ddim_sample(net, n, seed=seed)
    ddpm_s = time.perf_counter() - t0
    rows = []
    for how in ("fourier", "bicubic"):
        for N in resolutions:
            if how == "bicubic" and N == 28:
                continue
            g = Grid((N, N))
            r = quality.evaluate(_upsample(x28, N, how), g)
            r.update(label=f"DDPM 28 + {how}" if N > 28 else "DDPM (pixel, DDIM 50)", nfe=50, sample_s=ddpm_s)
            rows.append(r)
    model, sde, _, _ = load_run(fsdiff_model)
    frows, fsamples = sample_and_evaluate(model, sde, quality, resolutions, n=n, seed=seed)
    for r in frows:
        r["label"] = "fsdiff (UNO + precond)"
    rows = frows + rows
    table = format_quality_table(rows)
    train = ck["record"]
    head = (f"DDPM baseline: {train['params']} parameters, {train['steps']} steps at batch {train['batch']} in "
            f"{train['wall_s']:.0f} s on {train['threads']} thread(s); fsdiff model: {fsdiff_model}; n = {n}")
    print(head)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(f"{head}\n\n```\n{table}\n```\n")
    (out / "quality.json").write_text(json.dumps({"ddpm_training": train, "rows": rows}, indent=1))
    g28 = Grid((28, 28))
    panels = [("DDPM" if r == 0 else "", [("", x28[8 * r + i, 0], g28) for i in range(8)]) for r in range(4)]
    panels += [(f"fsdiff {N}²", [("", fsamples[N][i, 0], Grid((N, N))) for i in range(8)]) for N in resolutions]
    fig = field_panels(panels, cmap="gray", images=True, panel_size=1.3)
    fig.suptitle(f"top: equal-time pixel DDPM at 28² (DDIM 50); below: fsdiff at {', '.join(map(str, resolutions))}", fontsize=9)
    save_figure(fig, out / "samples.png")
    return rows


TARGETS_28 = {"confident": 0.85, "entropy": 0.97, "fd_ratio": 3.0}


def meets_targets(row: dict) -> bool:
    """The issue-11 28² targets: confident >= 0.85, entropy >= 0.97, FD <= 3x the floor."""
    return (row["confident"] >= TARGETS_28["confident"] and row["entropy"] >= TARGETS_28["entropy"]
            and row["fd_ratio"] <= TARGETS_28["fd_ratio"])


def time_to_quality(run: Path, n: int, out: Path, kind: str = "mnist", threads: int = 2, every: int = 1) -> list[dict]:
    """Quality at 28² of every ``every``-th checkpoint of ``run`` (EMA weights, the last one always) against
    its training wall-clock."""
    from fsdiff.eval.quality import ImageQuality, format_quality_table, sample_and_evaluate
    from fsdiff.training import load_run

    torch.set_num_threads(threads)
    quality = ImageQuality(kind)
    rows = []
    paths = sorted((run / "checkpoints").glob("step_*.pt"))
    for ck_path in [p for i, p in enumerate(paths) if (i + 1) % every == 0 or i == len(paths) - 1]:
        meta = torch.load(ck_path, weights_only=True)
        model, sde, _, _ = load_run(ck_path)
        row = sample_and_evaluate(model, sde, quality, [28], n=n)[0][0]
        row.update(label=f"step {meta['step']}", step=int(meta["step"]), train_wall_s=float(meta["metrics"]["wall_s"]),
                   meets_targets=meets_targets(row))
        rows.append(row)
        print(f"{format_quality_table([row]).splitlines()[-1]}  trained {row['train_wall_s']:.0f} s", flush=True)
    first = next((r for r in rows if r["meets_targets"]), None)
    verdict = (f"first checkpoint meeting the 28² targets: step {first['step']} after {first['train_wall_s'] / 60:.1f} min"
               if first else "no checkpoint meets the 28² targets " + json.dumps(TARGETS_28))
    table = "\n".join(f"{r['step']:>6} {r['train_wall_s'] / 60:>7.1f} {r['confident']:>9.3f} {r['entropy']:>7.3f} "
                      f"{r['fd']:>7.2f} {r['fd_ratio']:>8.2f}" for r in rows)
    text = (f"# Time to quality: {run} ({kind}, n = {n}, 28², default sampler)\n\n```\n"
            f"{'step':>6} {'minutes':>7} {'conf>=0.9':>9} {'entropy':>7} {'FD':>7} {'FD/floor':>8}\n{table}\n```\n\n{verdict}\n")
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"time_to_quality_{kind}.md").write_text(text)
    (out / f"time_to_quality_{kind}.json").write_text(json.dumps(rows, indent=1))
    return rows


def sampling_speed(model_path: str, n: int = 64, resolutions=(28, 56, 112), repeats: int = 3, threads: int = 2,
                   out: Path | None = None) -> dict:
    """Wall-clock of ``n`` samples at each resolution with the default sampler (24 steps), medians of ``repeats``.

    The baseline, measured in the same run, is the same model at 28² (the training grid): the
    ratio is what sampling at a finer grid costs. The issue-11 target is 64 digits at 112² in <= 60 s.
    """
    import statistics

    from fsdiff.grid import Grid
    from fsdiff.sampling import sample
    from fsdiff.training import load_run

    torch.set_num_threads(threads)
    model, sde, _, _ = load_run(model_path)
    times, nfe = {}, 0
    for N in resolutions:
        runs = []
        for r in range(repeats):
            t0 = time.perf_counter()
            _, info = sample(model, sde, Grid((N, N)), n, steps=24, time_grid="edm", chunk_size=64,
                             generator=torch.Generator().manual_seed(r), return_info=True)
            runs.append(time.perf_counter() - t0)
        times[N] = statistics.median(runs)
        nfe = info["nfe"]
    base = times[resolutions[0]]
    lines = [f"# Sampling speed: {model_path}, {n} samples, {info['sampler']} ({nfe} evaluations), "
             f"{threads} threads, median of {repeats}", "", "| N | seconds | vs 28² |", "|---|---|---|"]
    lines += [f"| {N}² | {times[N]:.1f} | {times[N] / base:.2f}x |" for N in resolutions]
    target = times[resolutions[-1]] <= 60.0
    lines += ["", f"target: {n} samples at {resolutions[-1]}² in <= 60 s: {'met' if target else 'not met'}"]
    text = "\n".join(lines) + "\n"
    print(text)
    result = {"model": model_path, "n": n, "threads": threads, "repeats": repeats, "nfe": nfe,
              "seconds": {str(N): times[N] for N in resolutions}, "target_met": target}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.md").write_text(text)
        (out / "speed.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train the pixel DDPM for a wall-clock budget")
    tr.add_argument("--budget-s", type=float, default=3300.0)
    tr.add_argument("--out", type=Path, default=Path("runs/ddpm-baseline"))
    tr.add_argument("--threads", type=int, default=1)
    ev = sub.add_parser("evaluate", help="side-by-side quality table")
    ev.add_argument("--ddpm", type=Path, default=Path("runs/ddpm-baseline/ddpm.pt"))
    ev.add_argument("--fsdiff", default="pretrained/mnist.pt")
    ev.add_argument("--n", type=int, default=512)
    ev.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    ev.add_argument("--threads", type=int, default=2)
    cu = sub.add_parser("curve", help="quality of every checkpoint of an fsdiff run against training time")
    cu.add_argument("run", type=Path)
    cu.add_argument("--kind", default="mnist", choices=["mnist", "fashion-mnist"])
    cu.add_argument("--n", type=int, default=256)
    cu.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    cu.add_argument("--threads", type=int, default=2)
    cu.add_argument("--every", type=int, default=1, help="evaluate every k-th checkpoint (and the last)")
    sp = sub.add_parser("speed", help="seconds for n samples at 28², 56², 112² (medians; baseline: the same model at 28²)")
    sp.add_argument("--fsdiff", default="pretrained/mnist.pt")
    sp.add_argument("--n", type=int, default=64)
    sp.add_argument("--repeats", type=int, default=3)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    args = ap.parse_args()
    if args.cmd == "speed":
        sampling_speed(args.fsdiff, args.n, repeats=args.repeats, threads=args.threads, out=args.out)
    elif args.cmd == "train":
        train_ddpm(args.budget_s, args.out, threads=args.threads)
    elif args.cmd == "curve":
        time_to_quality(args.run, args.n, args.out, args.kind, args.threads, args.every)
    else:
        evaluate(args.ddpm, args.fsdiff, args.n, args.out, threads=args.threads)


if __name__ == "__main__":
    main()
