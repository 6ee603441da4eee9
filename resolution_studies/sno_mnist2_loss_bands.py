"""Where the few-shot SNO falls behind the one-hot baseline on seen classes: DSM loss by diffusion time (issue 14).

On seen classes the one-hot class-conditional model (``sno_mnist2_baselines.py``) beats every SNO
setting. This study asks where, with no sampling. It evaluates the training objective itself: the
preconditioner-weighted DSM loss, with the same diffusion times (uniform in ``t``, the models' own
density) and the same Q-Wiener noise for every model and conditioning. The targets are latents of the
80 training classes, from two sources:

* **bank**: the latents the models were trained on (train split);
* **held-out**: test-split images of the same classes.

The conditionings compared:

* the SNO with K-shot prototypes of other bank images, K in {1, 5, 50}, plain and, when the checkpoint
  was trained so, deformed (its ``SupportAugmentation``, as in training);
* the SNO with the class mean, the mean of the class's whole bank of 150 latents (for bank targets the
  mean includes the target itself);
* the SNO with the null (zero) prototype, its unconditional branch;
* the one-hot model with its label, and with its null label.

Reported: the mean loss over all times and in the bands t < 0.2, 0.2-0.5 and > 0.5, each with its
standard error; and each conditioning's paired difference from the one-hot model with its label.
The one-hot model is the baselines study's: read back from ``--work-dir`` when it was trained with
this checkpoint's settings, else trained first, as long as the SNO's own training.

Run: ``FSDIFF_DATA_DIR=../shared/data python resolution_studies/sno_mnist2_loss_bands.py [--checkpoint F]
[--work-dir D]`` (about 3 min on one thread once the one-hot model is in ``D``); writes
``results/sno_mnist2_loss_bands/{results.json, summary.md, loss_by_time.png}``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from fsdiff.data import DOUBLE_GRID, DoubleDigits
from fsdiff.io import write_json
from fsdiff.losses import dsm_loss
from fsdiff.plotting import save_figure
from fsdiff.sno.augment import SupportAugmentation
from fsdiff.sno.latent import LATENT_GRID, augmented_latents, prototype

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import checkpoint_study_main, md_table, write_summary  # noqa: E402
from sno_mnist2_baselines import NULL_LABEL, ONE_HOT_OPTION, one_hot_baseline, open_checkpoint  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sno_mnist2_loss_bands"
BANDS = ((0.0, 0.2), (0.2, 0.5), (0.5, 1.0))
EPS = 1e-3          # the smallest DSM time, as in training
REFERENCE = "one-hot, label"


class _Conditioned:
    """``model(x, t, grid)`` of a conditional ``model(x, t, grid, cond)``, with its preconditioner's loss weight."""

    def __init__(self, model, cond):
        self.model, self.cond, self.loss_weight = model, cond, model.pre.loss_weight

    def __call__(self, x, t, grid):
        return self.model(x, t, grid, self.cond)


def _band_stats(loss: torch.Tensor, t: torch.Tensor) -> dict:
    """Mean and standard error of ``loss (n,)`` over all ``t`` and in each band of :data:`BANDS`."""
    def stat(v: torch.Tensor) -> dict:
        return {"mean": float(v.mean()), "se": float(v.std() / v.numel() ** 0.5), "n": v.numel()}

    out = {"all": stat(loss)}
    for lo, hi in BANDS:
        sel = (t >= lo) & ((t < hi) if hi < 1 else (t <= hi))
        out[f"{lo:g}-{hi:g}"] = stat(loss[sel])
    return out


def run(checkpoint: Path, out: Path, quick: bool, log=print, work_dir: Path | None = None,
        one_hot: Path | None = None) -> dict:
    t_all = time.perf_counter()
    g, ae, sno, sde, config = open_checkpoint(checkpoint)
    study = config.get("study", {})
    base = one_hot_baseline(ae, sno, sde, study, quick, work_dir, g, log, one_hot)
    bank, one_hot, train = base["latents"], base["model"], base["train"]
    strength = float(study.get("support_augmentation", 0.0))
    deformed = (augmented_latents(ae, base["images"], base["labels"], SupportAugmentation(strength=strength),
                                  int(study.get("augmented_copies", 4)), g) if strength > 0 else None)

    n = 64 if quick else 480
    shots = (1, 5) if quick else (1, 5, 50)
    gt = torch.Generator().manual_seed(1)
    cls = [train.classes[i] for i in torch.randint(len(train.classes), (n,), generator=gt).tolist()]
    perms = [torch.randperm(bank[c].shape[0], generator=gt)[: max(shots) + 1] for c in cls]   # [0]: target, [1:]: supports
    copies = [torch.randint(deformed[c].shape[0] if deformed else 1, (max(shots),), generator=gt) for c in cls]
    with torch.no_grad():
        held_out = ae.encode(DoubleDigits("test", classes="all").render(torch.tensor(cls), DOUBLE_GRID, gt))
    t = EPS + (1 - EPS) * torch.rand(n, generator=gt)
    eta = sde.covariance.sample(LATENT_GRID, n, held_out.shape[1], generator=gt)
    targets = {"bank": torch.stack([bank[c][p[0]] for c, p in zip(cls, perms)]), "held-out": held_out}

    def prototypes(k: int, deform: bool) -> torch.Tensor:
        if deform:
            return torch.stack([prototype(deformed[c][d[:k], p[1:k + 1]]) for c, p, d in zip(cls, perms, copies)])
        return torch.stack([prototype(bank[c][p[1:k + 1]]) for c, p in zip(cls, perms)])

    conds: dict[str, tuple] = {REFERENCE: (one_hot, cls), "one-hot, null label": (one_hot, [NULL_LABEL] * n)}
    for k in shots:
        conds[f"SNO, K = {k}"] = (sno, prototypes(k, False))
        if deformed is not None:
            conds[f"SNO, K = {k} deformed"] = (sno, prototypes(k, True))
    conds["SNO, class mean"] = (sno, torch.stack([bank[c].mean(0) for c in cls]))
    conds["SNO, null prototype"] = (sno, torch.zeros_like(held_out))

    results: dict = {}
    for tname, x0 in targets.items():
        losses = {}
        for name, (model, cond) in conds.items():
            with torch.no_grad():
                losses[name] = dsm_loss(_Conditioned(model, cond), x0, sde, LATENT_GRID, t=t, eta=eta, weighting="precond")
        results[tname] = {name: _band_stats(v, t) | {"minus_reference": _band_stats(v - losses[REFERENCE], t)}
                          for name, v in losses.items()}
        results[tname]["_curves"] = {name: _binned(v, t) for name, v in losses.items()}
        log(f"{tname}: " + ", ".join(f"{k} {v['all']['mean']:.3f}" for k, v in results[tname].items() if k[0] != "_"))
    summary = {"checkpoint": str(checkpoint), "one_hot_steps": base["steps"], "one_hot_seconds": base["seconds"],
               "one_hot_final_loss": base["final_loss"], "n": n,
               "support_augmentation": strength, "results": results, "total_s": time.perf_counter() - t_all,
               "torch_threads": torch.get_num_threads()}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", summary)
    _figure(out, results)
    write_summary(out, _summary(summary))
    return summary


def _binned(loss: torch.Tensor, t: torch.Tensor, bins: int = 10) -> dict:
    """The mean of ``loss`` in ``bins`` equal bins of ``t`` in [0, 1]: ``{"t": centres, "loss": means}``."""
    idx = (t * bins).long().clamp(max=bins - 1)
    means = [float(loss[idx == i].mean()) if (idx == i).any() else float("nan") for i in range(bins)]
    return {"t": [(i + 0.5) / bins for i in range(bins)], "loss": means}


def _figure(out: Path, results: dict) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.6), squeeze=False, sharey=True)
    for ax, (tname, r) in zip(axes[0], results.items()):
        for name, c in r["_curves"].items():
            if "deformed" in name or name == "SNO, K = 5":
                continue   # they sit on the plain K curves; the table has them
            style = "-" if name.startswith("one-hot") else (":" if "mean" in name else "--")
            ax.plot(c["t"], c["loss"], style, marker="s" if "mean" in name else "o", ms=3, label=name,
                    lw=2.5 if "mean" in name else 1.5)   # the class mean lies on K = 50: drawn so both show
        ax.set_title(f"{tname} targets", fontsize=9)
        ax.set_xlabel("diffusion time t")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("weighted DSM loss (bin mean)")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "loss_by_time.png")
    plt.close(fig)


def _summary(s: dict) -> str:
    cols = ["all", *(f"{lo:g}-{hi:g}" for lo, hi in BANDS)]
    lines = ["# Double digits, seen classes: DSM loss by diffusion time, SNO against the one-hot baseline", "",
             f"Checkpoint `{Path(s['checkpoint']).name}`; one-hot model {s['one_hot_steps']} steps (final training loss "
             f"{s['one_hot_final_loss']:.3f}). {s['n']} targets of the 80 training classes, the same times (uniform) and "
             "noise for every row; preconditioner-weighted DSM loss, mean ± standard error. Δ: the paired difference "
             f"from `{REFERENCE}` (positive: worse).", ""]
    for tname, r in s["results"].items():
        rows = [[name, *(f"{v[c]['mean']:.3f} ± {v[c]['se']:.3f}" for c in cols),
                 *(f"{v['minus_reference'][c]['mean']:+.3f} ± {v['minus_reference'][c]['se']:.3f}" for c in cols)]
                for name, v in r.items() if name[0] != "_"]
        lines += [f"## {tname} targets", "",
                  md_table(["conditioning", *(f"t {c}" for c in cols), *(f"Δ t {c}" for c in cols)], rows), ""]
    lines += ["![loss by time](loss_by_time.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return checkpoint_study_main(__doc__, run, OUT, argv, work_dir="sno_mnist2_baselines", options=ONE_HOT_OPTION)


if __name__ == "__main__":
    sys.exit(main())
