"""Super-resolution and inpainting of MNIST / Fashion-MNIST with the shipped unconditional score operators (issue 15).

What it shows: one unconditional model, conditioned at sampling time, turns a 7² or 14² coarse
digit into 28², 56² and 112² digits that agree with it exactly on the coarse modes
(:class:`fsdiff.conditional.LowModes`), and completes a half-masked digit
(:class:`fsdiff.conditional.Mask`). Measured per data set, input size and target grid:

* the error of the posterior mean (RMSE against the true digit, on the 28² pixels);
* calibration: the coverage of the per-pixel band ``[min, max]`` of 19 samples, whose nominal
  level is 18 / 20 = 0.90 when the truth is exchangeable with the samples (rank argument); on all
  pixels and on stroke pixels (truth > 0.1);
* the classifier accuracy of the samples against the true label, over the accuracy on the true
  digits (fsdiff's independent CNN, :class:`fsdiff.eval.quality.ImageQuality`);
* diversity: the mean pairwise RMSE of the samples of one digit;
* exactness: the largest deviation of a sample's coarse modes from the observation;
* baselines: Fourier (zero-padding) and bicubic interpolation of the coarse input.

Inpainting: the left half of each digit is observed (noise_std 0.05); the fraction of samples that
keep the true label, and their diversity.

Run: ``python resolution_studies/superres.py [--quick] [--out DIR]``; writes
``resolution_studies/results/superres/{summary.md, results.json, superres_<data>.png,
resolutions_<data>.png, inpaint_<data>.png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import fsdiff as fd
from fsdiff._paths import PRETRAINED_DIR
from fsdiff.conditional import LowModes, Mask, sample_conditional
from fsdiff.io import write_json, write_text
from fsdiff.plotting import save_figure
from fsdiff.training import load_run

OUT = Path(__file__).resolve().parent / "results" / "superres"
G28 = fd.Grid((28, 28))


@dataclass(frozen=True)
class SuperresConfig:
    """Settings of :func:`run_superres_study` (defaults: ~35 min on one CPU thread)."""

    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    inputs: tuple[int, ...] = (7, 14)
    targets: tuple[int, ...] = (28, 56, 112)
    n_digits: int = 8           # per data set and input size, at 28²
    n_digits_fine: int = 3      # at the finer targets (14² input only; the model is exact beyond |k| = 13)
    n_samples: int = 19         # per digit: [min, max] of 19 draws is a 90% band
    steps: int = 100
    inpaint_digits: int = 8
    inpaint_samples: int = 8
    noise_std: float = 0.05
    seed: int = 0


def _digits(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from fsdiff.data.mnist import load_mnist

    x, y = load_mnist("test", kind=kind)
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx].double(), y[idx]


def _pairwise_rmse(s: torch.Tensor) -> float:
    f = s.flatten(1)
    d = torch.cdist(f, f) / f.shape[1] ** 0.5
    k = f.shape[0]
    return float(d.sum() / (k * (k - 1))) if k > 1 else 0.0


def _accuracy(quality, x: torch.Tensor, labels: torch.Tensor) -> float:
    return float((quality.probabilities(x.float(), G28).argmax(-1) == labels).double().mean())


def superres_cell(model, sde, quality, truth, labels, c: int, target: int, cfg: SuperresConfig, gen) -> tuple[dict, torch.Tensor]:
    """All figures for one (input size, target grid): returns ``(metrics, samples (D, S, 1, target, target))``."""
    gc, gt = fd.Grid((c, c)), fd.Grid((target, target))
    out, cov_all, cov_stroke, errs, divs, exact = [], [], [], [], [], []
    for d in range(truth.shape[0]):
        coarse = fd.resample(truth[d], G28, gc)
        s = sample_conditional(model, sde, gt, cfg.n_samples, LowModes(coarse, gc), steps=cfg.steps, generator=gen)
        exact.append(float((fd.resample(s.double(), gt, gc) - fd.resample(fd.resample(coarse, gc, G28), G28, gc)).abs().max()))
        s28 = fd.resample(s.double(), gt, G28)
        lo, hi = s28.min(0).values, s28.max(0).values
        inside = (truth[d] >= lo) & (truth[d] <= hi)
        cov_all.append(float(inside.double().mean()))
        stroke = truth[d] > 0.1
        cov_stroke.append(float(inside[stroke].double().mean()))
        errs.append(float((s28.mean(0) - truth[d]).square().mean().sqrt()))
        divs.append(_pairwise_rmse(s28))
        out.append(s)
    samples = torch.stack(out)  # (D, S, 1, n, n)
    s28 = fd.resample(samples.flatten(0, 1).double(), gt, G28)
    acc_true = _accuracy(quality, truth, labels)
    acc = _accuracy(quality, s28, labels.repeat_interleave(cfg.n_samples))
    # baselines on the same digits
    coarse_all = fd.resample(truth, G28, gc)
    fourier = fd.resample(coarse_all, gc, G28)
    bicubic = F.interpolate(coarse_all, size=(28, 28), mode="bicubic", align_corners=False)
    rmse = lambda a: float((a - truth).square().mean(dim=(1, 2, 3)).sqrt().mean())  # noqa: E731
    return {
        "input": c, "target": target, "digits": truth.shape[0], "samples_per_digit": cfg.n_samples,
        "posterior_mean_rmse": sum(errs) / len(errs), "coverage_all": sum(cov_all) / len(cov_all),
        "coverage_stroke": sum(cov_stroke) / len(cov_stroke), "accuracy": acc, "accuracy_true": acc_true,
        "accuracy_ratio": acc / max(acc_true, 1e-12), "diversity": sum(divs) / len(divs), "max_coarse_error": max(exact),
        "fourier_rmse": rmse(fourier), "bicubic_rmse": rmse(bicubic),
        "fourier_accuracy": _accuracy(quality, fourier, labels), "bicubic_accuracy": _accuracy(quality, bicubic, labels),
    }, samples


def inpaint_cell(model, sde, quality, truth, labels, cfg: SuperresConfig, gen) -> tuple[dict, torch.Tensor, torch.Tensor]:
    mask = torch.zeros(28, 28, dtype=torch.bool)
    mask[:, :14] = True  # the first axis is the image row: columns 0..13, the left half, are observed
    out = []
    for d in range(truth.shape[0]):
        out.append(sample_conditional(model, sde, G28, cfg.inpaint_samples, Mask(mask, truth[d, 0], cfg.noise_std),
                                      steps=cfg.steps, generator=gen))
    samples = torch.stack(out)
    acc = _accuracy(quality, samples.flatten(0, 1).double(), labels.repeat_interleave(cfg.inpaint_samples))
    obs_err = float(max((s.double()[:, 0][:, mask] - truth[d, 0][mask]).abs().mean() for d, s in enumerate(out)))
    return {"digits": truth.shape[0], "samples_per_digit": cfg.inpaint_samples, "accuracy": acc,
            "accuracy_true": _accuracy(quality, truth, labels),
            "diversity": sum(_pairwise_rmse(s.double()) for s in out) / len(out),
            "max_mean_abs_error_on_observed": obs_err}, samples, mask


def _figures(out: Path, kind: str, truth, cells: dict, inpaint: tuple, cfg: SuperresConfig) -> None:
    import matplotlib.pyplot as plt

    show = min(4, truth.shape[0])
    for c in cfg.inputs:
        s = cells[(c, 28)][1]
        gc = fd.Grid((c, c))
        k = min(4, s.shape[1])
        cols = ["truth", f"input {c}²", "Fourier", "bicubic"] + [f"sample {j + 1}" for j in range(k)] + ["posterior std"]
        fig, axes = plt.subplots(show, len(cols), figsize=(1.5 * len(cols), 1.6 * show), squeeze=False)
        for d in range(show):
            coarse = fd.resample(truth[d], G28, gc)
            imgs = [truth[d, 0], coarse[0], fd.resample(coarse, gc, G28)[0],
                    F.interpolate(coarse[None], size=(28, 28), mode="bicubic", align_corners=False)[0, 0]]
            imgs += [s[d, j, 0] for j in range(k)] + [s[d, :, 0].double().std(0)]
            for j, (ax, im) in enumerate(zip(axes[d], imgs)):
                ax.imshow(im.numpy(), cmap="gray", vmin=0, vmax=1 if j < len(imgs) - 1 else None, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if d == 0:
                    ax.set_title(cols[j], fontsize=8)
        save_figure(fig, out / f"superres_{kind}_{c}.png")
    fine = [t for t in cfg.targets if (14, t) in cells]
    if fine:
        fig, axes = plt.subplots(1, 1 + len(fine), figsize=(2.2 * (1 + len(fine)), 2.4))
        coarse = fd.resample(truth[0], G28, fd.Grid((14, 14)))
        axes[0].imshow(coarse[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0].set_title("input 14²", fontsize=9)
        for ax, t in zip(axes[1:], fine):
            ax.imshow(cells[(14, t)][1][0, 0, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"sample at {t}²", fontsize=9)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        save_figure(fig, out / f"resolutions_{kind}.png")
    _, samples, mask = inpaint
    k = min(5, samples.shape[1])
    show = min(show, samples.shape[0])
    fig, axes = plt.subplots(show, 2 + k, figsize=(1.5 * (2 + k), 1.6 * show), squeeze=False)
    for d in range(show):
        imgs = [truth[d, 0], truth[d, 0] * mask] + [samples[d, j, 0] for j in range(k)]
        for j, (ax, im) in enumerate(zip(axes[d], imgs)):
            ax.imshow(im.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if d == 0:
                ax.set_title(["truth", "observed"][j] if j < 2 else f"sample {j - 1}", fontsize=8)
    save_figure(fig, out / f"inpaint_{kind}.png")


def run_superres_study(cfg: SuperresConfig, out: Path, log=print) -> dict:
    from fsdiff.eval.quality import ImageQuality

    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": dataclasses.asdict(cfg), "datasets": {}}
    t_all = time.perf_counter()
    for kind in cfg.datasets:
        t0 = time.perf_counter()
        model, sde, _, _ = load_run(PRETRAINED_DIR / f"{kind}.pt")
        model.eval()
        quality = ImageQuality(kind)
        gen = torch.Generator().manual_seed(cfg.seed)
        truth, labels = _digits(kind, max(cfg.n_digits, cfg.inpaint_digits), cfg.seed)
        cells = {}
        for c in cfg.inputs:
            for t in cfg.targets:
                if t != 28 and c != 14:
                    continue
                n = cfg.n_digits if t == 28 else cfg.n_digits_fine
                m, s = superres_cell(model, sde, quality, truth[:n], labels[:n], c, t, cfg, gen)
                cells[(c, t)] = (m, s)
                log(f"{kind} {c}² -> {t}²: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)))
        inp = inpaint_cell(model, sde, quality, truth[:cfg.inpaint_digits], labels[:cfg.inpaint_digits], cfg, gen)
        log(f"{kind} inpainting: " + ", ".join(f"{k} {v:.3f}" for k, v in inp[0].items() if isinstance(v, float)))
        _figures(out, kind, truth, cells, inp, cfg)
        results["datasets"][kind] = {"superres": [m for m, _ in cells.values()], "inpaint": inp[0],
                                     "classifier_accuracy": quality.record.get("accuracy"),
                                     "wall_s": time.perf_counter() - t0}
    results["wall_s"] = time.perf_counter() - t_all
    results["torch_threads"] = torch.get_num_threads()
    write_json(out / "results.json", results)
    write_text(out / "summary.md", _summary(results))
    return results


def _summary(r: dict) -> str:
    c = r["config"]
    lines = ["# Super-resolution and inpainting with one unconditional model (issue 15)", "",
             f"Shipped models `pretrained/<data>.pt`; reverse-SDE Euler–Maruyama, {c['steps']} steps; "
             f"{c['n_samples']} samples per digit (their per-pixel [min, max] is a 90% band); test digits drawn with seed "
             f"{c['seed']}. Runtime {r['wall_s']:.0f} s on {r['torch_threads']} thread(s). Targets: accuracy ratio >= 0.95 "
             "and coverage in [0.85, 0.95] from 14²; inpainting accuracy >= 0.80.", ""]
    for kind, d in r["datasets"].items():
        lines += [f"## {kind} (classifier test accuracy {d['classifier_accuracy']:.3f})", "",
                  "| input | target | digits | posterior-mean RMSE | Fourier / bicubic RMSE | coverage (all / stroke) "
                  "| accuracy / true digits | ratio | Fourier / bicubic accuracy | diversity | max coarse-mode error |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in d["superres"]:
            lines.append(f"| {m['input']}² | {m['target']}² | {m['digits']} | {m['posterior_mean_rmse']:.3f} | "
                         f"{m['fourier_rmse']:.3f} / {m['bicubic_rmse']:.3f} | {m['coverage_all']:.3f} / {m['coverage_stroke']:.3f} | "
                         f"{m['accuracy']:.3f} / {m['accuracy_true']:.3f} | {m['accuracy_ratio']:.3f} | "
                         f"{m['fourier_accuracy']:.3f} / {m['bicubic_accuracy']:.3f} | {m['diversity']:.3f} | {m['max_coarse_error']:.1e} |")
        i = d["inpaint"]
        lines += ["", f"Inpainting (left half observed, noise_std {c['noise_std']}): {i['accuracy']:.3f} of "
                  f"{i['digits']} x {i['samples_per_digit']} samples keep the true label (true digits {i['accuracy_true']:.3f}); "
                  f"diversity {i['diversity']:.3f}; mean |sample - observation| on the observed half at most "
                  f"{i['max_mean_abs_error_on_observed']:.3f}.", ""]
    lines += ["Figures: `superres_<data>_<input>.png` (truth, input, baselines, samples, posterior std), "
              "`resolutions_<data>.png` (one 14² input sampled at every target), `inpaint_<data>.png`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (not the reported numbers)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = SuperresConfig()
    if a.quick:
        cfg = dataclasses.replace(cfg, datasets=("mnist",), targets=(28, 56), n_digits=2, n_digits_fine=1, n_samples=3,
                                  steps=8, inpaint_digits=1, inpaint_samples=2)
    run_superres_study(cfg, a.out, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
