"""Score Neural Operator on MNIST double digits in a latent function space: few-shot generation for unseen classes.

What it does (issue 14): trains a latent autoencoder on the 80 training classes of
:class:`fsdiff.data.DoubleDigits` (train split), encodes a bank of latents per class, trains a
latent score operator (an :class:`~fsdiff.models.FNOScore` conditioned on the class prototype,
the mean latent of K support images, K in {1, 5, 50}) by conditional DSM, then, for seen and for
the 20 unseen classes, takes K support images from the *test* split and generates new images.

Measured, per (seen / unseen, K):

* both digits right: fsdiff's MNIST classifier on each 28² half of a generated image;
* diversity: mean pairwise RMSE of the generated images of a class;
* memorisation: each sample's RMSE to its nearest support image, against the same distance for
  held-out real test images of the class (a copying model would sit far below the real images);
* the autoencoder's reconstruction error and the classifier check on reconstructions.

Baselines not yet run: a one-hot class-conditional model (seen classes) and an unconditional
latent model (see the issue's closing note).

Run: ``python resolution_studies/sno_mnist2.py [--config configs/sno_double_digits.toml] [--quick] [--out DIR]``; writes
``resolution_studies/results/sno_mnist2/{summary.md, results.json, samples_seen.png,
samples_unseen.png, reconstructions.png, autoencoder.pt, few_shot.pt}`` (``few_shot.pt``: autoencoder,
latent score operator and SDE in one file, for ``fsdiff sno-sample``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import fsdiff as fd
from fsdiff.data import CLASS_NAMES, DOUBLE_GRID, DoubleDigits
from fsdiff.eval.classifier import load_or_train_classifier
from fsdiff.eval.quality import CLASSIFIER_DIR
from fsdiff.io import save_checkpoint, write_json
from fsdiff.losses import TIME_SAMPLINGS
from fsdiff.plotting import save_figure
from fsdiff.data.statistics import SpectralStatistics
from fsdiff.sno.augment import SupportAugmentation
from fsdiff.sno.prototype_encoder import PrototypeEncoder
from fsdiff.sno.latent import (augmented_latents, LATENT_GRID, LatentAutoencoder, LatentSNOConfig, PrototypeScore, encode_by_class,
                               few_shot_sample, residual_statistics, save_few_shot, train_autoencoder,
                               train_latent_sno)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import both_right, nearest_distance, pairwise_distance, write_summary  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sno_mnist2"


@dataclass(frozen=True)
class SNOMnist2Config:
    """Settings (defaults: ~40 min on one CPU thread)."""

    ae_steps: int = 1500
    ae_width: int = 16
    latent_channels: int = 4
    bank_per_class: int = 150      # training latents per class (train split)
    sno_steps: int = 8000
    sno_width: int = 32
    sno_layers: int = 4
    shots: tuple[int, ...] = (1, 5, 50)
    eval_seen: int = 10            # seen classes evaluated (of 80)
    n_generate: int = 16           # per class and K
    n_real: int = 32               # held-out real test images per class (memorisation reference)
    sample_steps: int = 24
    centred: bool = True           # the Gaussian part centred on the prototype (PrototypeScore(centred=True))
    residual_scales: tuple[float, ...] = (1.0, 0.5, 0.0)   # weights of the learned residual evaluated (0: Gaussian part)
    drop_prototype: float = 0.0    # train with the null prototype this often (classifier-free guidance)
    guidances: tuple[float, ...] = (1.0,)   # guidance weights evaluated (with each residual weight)
    prototype_noise: float = 0.0            # conditioning augmentation of training prototypes (LatentSNOConfig)
    statistics_shots: tuple[int, ...] = ()  # K values the centred Gaussian part's statistics are fitted over (default: shots)
    support_augmentation: float = 0.0       # train on prototypes of deformed supports (SupportAugmentation strength; 0: off)
    augmented_copies: int = 4               # deformed copies of each bank image
    encoder_width: int = 0                  # PrototypeEncoder width (0: the network sees the raw prototype)
    encoder_layers: int = 2
    encoder_channels: int = 8               # its local feature channels
    encoder_code: int = 16                  # its global code size
    noise_tau: float = 8.0                  # Matern(1.5, tau) noise of the latent SDE (large tau: near-flat spectrum)
    band_limited: bool = False              # the autoencoder's latents drop the Nyquist column (LatentAutoencoder)
    time_sampling: str = "edm"              # the DSM time density (fsdiff.losses.TIME_SAMPLINGS)
    seed: int = 0


def train_few_shot_sno(cfg: SNOMnist2Config, ae: LatentAutoencoder, train: DoubleDigits, g: torch.Generator,
                       log=print) -> tuple[PrototypeScore, fd.VPSDE, list[float]]:
    """The latent score operator of ``cfg`` trained on ``train.classes`` (a bank of their latents, the SDE scaled
    to them, the Gaussian part's statistics); returns ``(ema model, sde, losses)``."""
    labels = torch.tensor(train.classes).repeat_interleave(cfg.bank_per_class)
    imgs = train.render(labels, DOUBLE_GRID, g)
    latents = encode_by_class(ae, imgs, labels)
    scale = float(torch.cat(list(latents.values())).std())
    sde = fd.VPSDE(fd.Matern(alpha=1.5, tau=cfg.noise_tau).with_pointwise_variance(scale**2, LATENT_GRID))
    encoder = (PrototypeEncoder(cfg.latent_channels, cfg.encoder_width, (3, 6), cfg.encoder_layers, cfg.encoder_channels,
                                cfg.encoder_code) if cfg.encoder_width else None)
    net = fd.FNOScore(in_channels=cfg.latent_channels, width=cfg.sno_width, modes=(3, 6), n_layers=cfg.sno_layers,
                      cond_channels=cfg.latent_channels + (cfg.latent_channels if encoder is None else encoder.out_dim),
                      positional="periodic")
    if cfg.centred:
        stats = residual_statistics(latents, train.classes, cfg.statistics_shots or cfg.shots, 20000, g)
    else:
        stats = SpectralStatistics(LATENT_GRID.shape, LATENT_GRID.length, cfg.latent_channels).fit(torch.cat(list(latents.values())))
    model = PrototypeScore(net, sde, stats, centred=cfg.centred, encoder=encoder)
    scfg = LatentSNOConfig(steps=cfg.sno_steps, shots=cfg.shots, weighting="precond", time_sampling=cfg.time_sampling,
                           drop_prototype=cfg.drop_prototype, prototype_noise=cfg.prototype_noise)
    support_latents = None
    if cfg.support_augmentation > 0:
        support_latents = augmented_latents(ae, imgs, labels, SupportAugmentation(strength=cfg.support_augmentation),
                                            cfg.augmented_copies, g)
    sno, losses = train_latent_sno(model, sde, latents, train.classes, scfg, g, log=log, support_latents=support_latents)
    return sno, sde, losses


def read_autoencoder(path: Path, ae: LatentAutoencoder) -> LatentAutoencoder:
    """Load into ``ae`` (in eval mode) the autoencoder of ``path``: this study's ``autoencoder.pt`` or a few-shot
    checkpoint (``few_shot.pt``, ``pretrained/sno_double_digits.pt``), whose autoencoder it carries."""
    from fsdiff.errors import CheckpointError
    from fsdiff.io import load_checkpoint, load_state
    from fsdiff.sno.latent import FEW_SHOT_KIND

    ck = load_checkpoint(path)
    entry = ck.get("autoencoder") if ck.get("kind") == FEW_SHOT_KIND else ck.get("model")
    if not isinstance(entry, dict) or "state_dict" not in entry or "spec" not in entry:
        raise CheckpointError(f"{path} holds no autoencoder (expected this study's autoencoder.pt or a few-shot "
                              f"checkpoint of kind {FEW_SHOT_KIND!r})")
    load_state(ae, entry["state_dict"], path, entry["spec"], ae.spec)
    return ae.eval()


def run(cfg: SNOMnist2Config, out: Path, log=print, autoencoder: Path | None = None,
        few_shot: Path | None = None) -> dict:
    t_all = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # parameter initialisation only
    train = DoubleDigits("train", classes="train")
    test = DoubleDigits("test", classes="all")
    clf, rec = load_or_train_classifier("mnist", cache_dir=CLASSIFIER_DIR)
    timings = {}

    # ---------------------------------------------------------------- autoencoder
    t0 = time.perf_counter()
    ae = LatentAutoencoder(cfg.latent_channels, cfg.ae_width, band_limited=cfg.band_limited)
    if few_shot is not None:  # evaluate a trained file again (its own config records its training)
        from fsdiff.sno.latent import load_few_shot

        ae, sno, sde = load_few_shot(few_shot)
        losses = [float("nan")]
    elif autoencoder is not None:  # reuse a trained one (its own file records its steps and time)
        read_autoencoder(autoencoder, ae)
    else:
        train_autoencoder(ae, lambda n, gg: train.sample(DOUBLE_GRID, n, gg), cfg.ae_steps, g, log=log)
    timings["autoencoder_s"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused --autoencoder or --few-shot file writes nothing
    if few_shot is None:
        save_checkpoint(out / "autoencoder.pt", {"config": {"study": dataclasses.asdict(cfg)},
                                                 "model": {"spec": ae.spec, "state_dict": ae.state_dict()},
                                                 "step": cfg.ae_steps})
    xt, yt = test.sample_with_labels(DOUBLE_GRID, 512, torch.Generator().manual_seed(cfg.seed + 1))
    with torch.no_grad():
        recon = ae.decode(ae.encode(xt))
    ae_metrics = {"recon_rmse": float((recon - xt).square().mean().sqrt()),
                  "both_right_real": float(both_right(clf, xt, yt).double().mean()),
                  "both_right_recon": float(both_right(clf, recon, yt).double().mean())}
    log(f"autoencoder: {ae_metrics}")

    # ---------------------------------------------------------------- latent bank and SNO
    t0 = time.perf_counter()
    if few_shot is None:
        sno, sde, losses = train_few_shot_sno(cfg, ae, train, g, log)
        save_few_shot(out / "few_shot.pt", ae, sno, sde, {"study": dataclasses.asdict(cfg)}, cfg.sno_steps)
    timings["latent_sno_s"] = time.perf_counter() - t0
    if few_shot is not None and (few_shot.parent / "results.json").exists():  # the training run's own times
        import json

        prev = json.loads((few_shot.parent / "results.json").read_text())
        timings.update({k: prev["timings"][k] for k in ("autoencoder_s", "latent_sno_s")})
        losses = [prev["final_sno_loss"]]

    # ---------------------------------------------------------------- few-shot evaluation
    t0 = time.perf_counter()
    seen = train.classes[:: max(1, len(train.classes) // cfg.eval_seen)][: cfg.eval_seen]
    groups = {"seen": seen, "unseen": train.held_out}
    results: dict = {}
    shown: dict = {}
    for r_scale, w in [(r, w) for r in cfg.residual_scales for w in cfg.guidances]:
        gt = torch.Generator().manual_seed(cfg.seed + 2)  # the same supports and real images for every scale
        for name, classes in groups.items():
            for k in cfg.shots:
                rows = []
                for c in classes:
                    support = test.render(torch.full((k,), c), DOUBLE_GRID, gt)
                    real = test.render(torch.full((cfg.n_real,), c), DOUBLE_GRID, gt)
                    x = few_shot_sample(sno, ae, sde, support, cfg.n_generate, generator=gt, steps=cfg.sample_steps,
                                        residual_scale=r_scale, guidance=w)
                    lab = torch.full((cfg.n_generate,), c)
                    rows.append({"class": CLASS_NAMES[c], "both_right": float(both_right(clf, x, lab).double().mean()),
                                 "diversity": pairwise_distance(x), "real_diversity": pairwise_distance(real),
                                 "nearest_support_samples": float(nearest_distance(x, support).mean()),
                                 "nearest_support_real": float(nearest_distance(real, support).mean())})
                    if k in (1, 5) and len(shown.setdefault((r_scale, w, name, k), [])) < 4:
                        shown[(r_scale, w, name, k)].append((CLASS_NAMES[c], support[:k], x[:6]))
                agg = {m: sum(r[m] for r in rows) / len(rows) for m in rows[0] if m != "class"}
                results[f"{name}_K{k}_r{r_scale:g}_w{w:g}"] = {"classes": len(rows), "residual_scale": r_scale,
                                                               "guidance": w, **agg, "per_class": rows}
                log(f"residual x{r_scale:g} guidance {w:g} {name} K={k}: " + ", ".join(f"{m} {v:.3f}" for m, v in agg.items()))
    timings["evaluation_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    summary = {"config": dataclasses.asdict(cfg), "autoencoder": ae_metrics, "few_shot": results,
               "held_out_classes": [CLASS_NAMES[c] for c in train.held_out], "timings": timings,
               "final_sno_loss": sum(losses[-100:]) / len(losses[-100:]), "torch_threads": torch.get_num_threads(),
               "classifier_accuracy": rec.get("accuracy")}
    write_json(out / "results.json", summary)
    _figures(out, xt, recon, shown)
    write_summary(out, _summary(summary))
    return summary


def _figures(out: Path, xt, recon, shown) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 6, figsize=(12, 2.6))
    for j in range(6):
        for i, im in enumerate((xt[j, 0], recon[j, 0])):
            axes[i, j].imshow(im.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    axes[0, 0].set_ylabel("real", fontsize=8)
    axes[1, 0].set_ylabel("reconstructed", fontsize=8)
    save_figure(fig, out / "reconstructions.png")
    for r_scale, w, name in sorted({key[:3] for key in shown}):
        items = shown.get((r_scale, w, name, 1), []) + shown.get((r_scale, w, name, 5), [])
        if not items:
            continue
        cols = 5 + 6
        fig, axes = plt.subplots(len(items), cols, figsize=(1.6 * cols, 0.95 * len(items) + 0.4), squeeze=False)
        for r, (cname, support, x) in enumerate(items):
            for j in range(cols):
                ax = axes[r, j]
                ax.set_xticks([])
                ax.set_yticks([])
                im = support[j, 0] if j < min(5, support.shape[0]) else (x[j - 5, 0] if 5 <= j < 5 + x.shape[0] else None)
                if im is not None:
                    ax.imshow(im.numpy(), cmap="gray", vmin=0, vmax=1)
                elif j > 0:
                    ax.axis("off")   # fewer than 5 support images
            axes[r, 0].set_ylabel(f"{cname} K={support.shape[0]}", fontsize=7)
        axes[0, 0].set_title("support", fontsize=8)
        axes[0, 5].set_title("generated", fontsize=8)
        tag = ("" if r_scale == 1 else f"_residual{r_scale:g}") + ("" if w == 1 else f"_guidance{w:g}")
        save_figure(fig, out / f"samples_{name}{tag}.png")


def _summary(s: dict) -> str:
    c, a = s["config"], s["autoencoder"]
    lines = ["# Score Neural Operator on MNIST double digits (latent function space)", "",
             f"Autoencoder {c['ae_steps']} steps ("
             + (f"{s['timings']['autoencoder_s']:.0f} s" if s['timings']['autoencoder_s'] >= 1 else "reused, trained by an earlier run")
             + f"): latent {c['latent_channels']} x 7 x 14; "
             f"reconstruction RMSE {a['recon_rmse']:.3f}; both digits right on real test images {a['both_right_real']:.3f}, "
             f"on their reconstructions {a['both_right_recon']:.3f}. Latent SNO (PrototypeScore: an FNO residual on the Gaussian part "
             f"{'centred on the prototype' if c.get('centred', True) else 'of the whole latent bank (not centred)'}) "
             f"{c['sno_steps']} steps ({s['timings']['latent_sno_s']:.0f} s); sampler Heun PF-ODE, {c['sample_steps']} steps. "
             f"Unseen classes: {', '.join(s['held_out_classes'])}. Runtime {s['timings']['total_s']:.0f} s on "
             f"{s['torch_threads']} thread(s).", "",
             f"Latent SDE: VP with Matern(1.5, tau = {c.get('noise_tau', 8.0):g}) noise scaled to the latents' pointwise "
             f"variance; latents {'band-limited (no Nyquist column)' if c.get('band_limited') else 'with their Nyquist column'}; "
             f"DSM times drawn {c.get('time_sampling', 'edm')}.", "",
             (f"Latent score operator: FNOScore width {c['sno_width']}, {c['sno_layers']} layers, conditioned on "
              + (f"a PrototypeEncoder of the prototype (width {c['encoder_width']}, {c.get('encoder_layers', 2)} layers, "
                 f"{c.get('encoder_channels', 8)} local channels, a {c.get('encoder_code', 16)}-D global code)."
                 if c.get("encoder_width") else "the raw prototype.")) + f" Final training loss {s['final_sno_loss']:.4f}.", "",
             "`residual` is the weight of the learned residual network on top of the Gaussian part "
             "(1: the trained model; 0: the Gaussian part alone, no network).", "",
             "`guidance` w: classifier-free guidance with the null prototype (1: none).", "",
             *([f"Support augmentation in training: prototypes average deformed copies of the support images "
                f"(SupportAugmentation strength {c['support_augmentation']:g}, {c['augmented_copies']} copies per image); "
                "sampling here is without augmentation.", ""] if c.get("support_augmentation") else []),
             "| residual | guidance | classes | K | both digits right | diversity (real) | nearest support: samples / real |",
             "|---|---|---|---|---|---|---|"]
    for key, r in s["few_shot"].items():
        name, k = key.split("_r")[0].split("_K")
        lines.append(f"| {r['residual_scale']:g} | {r['guidance']:g} | {name} ({r['classes']}) | {k} | {r['both_right']:.3f} | "
                     f"{r['diversity']:.3f} ({r['real_diversity']:.3f}) "
                     f"| {r['nearest_support_samples']:.3f} / {r['nearest_support_real']:.3f} |")
    lines += ["", "Targets (issue 14): unseen K = 5 >= 0.70 both right, K = 1 >= 0.50; memorisation: samples no closer to the "
              "support than real images of the class.", "",
              "Figures: `samples_{seen,unseen}[_residualR][_guidanceW].png` (support | generated), `reconstructions.png`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None,
                   help="TOML file with a [study] table of SNOMnist2Config fields (e.g. configs/sno_double_digits.toml); "
                        "the flags below override it")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (not the reported numbers)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--autoencoder", type=Path, default=None,
                   help="reuse this trained autoencoder.pt, or the autoencoder of a few-shot checkpoint")
    p.add_argument("--few-shot", type=Path, default=None, help="evaluate this trained few_shot.pt again (no training)")
    p.add_argument("--drop-prototype", type=float, default=None, help="train with the null prototype this often")
    p.add_argument("--guidances", type=float, nargs="+", default=None, help="guidance weights to evaluate")
    p.add_argument("--residual-scales", type=float, nargs="+", default=None, help="residual weights to evaluate")
    p.add_argument("--prototype-noise", type=float, default=None,
                   help="add N(0, (a std / sqrt(K))^2) to training prototypes (conditioning augmentation)")
    p.add_argument("--uncentred", action="store_true",
                   help="the Gaussian part is the whole latent bank's, not centred on the prototype (PrototypeScore(centred=False))")
    p.add_argument("--support-augmentation", type=float, default=None,
                   help="train on prototypes of randomly deformed support images (SupportAugmentation strength)")
    p.add_argument("--statistics-shots", type=int, nargs="+", default=None,
                   help="fit the centred Gaussian part's statistics over these K (default: the training shots)")
    p.add_argument("--encoder-width", type=int, default=None,
                   help="condition on a PrototypeEncoder of this width (local features and a global code; 0: raw prototype)")
    p.add_argument("--sno-width", type=int, default=None, help="width of the latent score operator")
    p.add_argument("--sno-steps", type=int, default=None, help="training steps of the latent score operator")
    p.add_argument("--noise-tau", type=float, default=None,
                   help="tau of the latent SDE's Matern(1.5, tau) noise (default 8; large: a near-flat spectrum)")
    p.add_argument("--time-sampling", choices=TIME_SAMPLINGS, default=None,
                   help="the DSM time density (default edm; uniform puts more training at large t, edm_uniform half of it)")
    p.add_argument("--band-limited", action="store_true", help="the autoencoder's latents drop their Nyquist column")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = SNOMnist2Config()
    if a.config is not None:
        import tomllib

        from fsdiff.config import dataclass_from_table

        with open(a.config, "rb") as f:
            cfg = dataclass_from_table(SNOMnist2Config, tomllib.load(f).get("study", {}), "study")
    for key, v in (("drop_prototype", a.drop_prototype), ("guidances", a.guidances),
                   ("residual_scales", a.residual_scales), ("statistics_shots", a.statistics_shots),
                   ("prototype_noise", a.prototype_noise), ("support_augmentation", a.support_augmentation),
                   ("encoder_width", a.encoder_width), ("sno_width", a.sno_width), ("sno_steps", a.sno_steps),
                   ("noise_tau", a.noise_tau), ("time_sampling", a.time_sampling)):
        if v is not None:
            cfg = dataclasses.replace(cfg, **{key: tuple(v) if isinstance(v, list) else v})
    if a.uncentred:
        cfg = dataclasses.replace(cfg, centred=False)
    if a.band_limited:
        cfg = dataclasses.replace(cfg, band_limited=True)
    if a.quick:
        cfg = dataclasses.replace(cfg, ae_steps=20, bank_per_class=52, sno_steps=20, sno_width=8, sno_layers=1,
                                  eval_seen=2, n_generate=2, n_real=3, sample_steps=2)
    run(cfg, a.out, log=lambda s: print(s, flush=True), autoencoder=a.autoencoder, few_shot=a.few_shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
