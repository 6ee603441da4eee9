"""Helpers shared by the resolution studies: threads/allocator set-up, runs, atomic outputs."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

import fsdiff as fd  # noqa: E402
from fsdiff.io import write_json, write_netcdf, write_text  # noqa: E402,F401


def parser(doc: str, study: str) -> argparse.ArgumentParser:
    """Arguments every study takes: ``--out``, ``--work-dir``, ``--threads``, ``--seed``, ``--quick``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS / study, help=f"output folder (default results/{study})")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "fsdiff-studies" / study,
                   help="where training runs (checkpoints) go; not committed")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): a smoke test, numbers meaningless")
    return p


def setup(args: argparse.Namespace) -> str:
    """Set threads and the allocator; returns a one-line description of the environment."""
    from fsdiff.app.runtime import tune_allocator

    torch.set_num_threads(max(1, int(args.threads)))
    malloc = tune_allocator()
    args.out.mkdir(parents=True, exist_ok=True)
    return f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, allocator: {malloc}"


def train_run(run_dir: Path, cfg: Any, white_sigma: float | None = None, progress: bool = False,
              reuse: bool = True) -> dict:
    """Train ``cfg`` (a RunConfig) into a fresh ``run_dir``; ``white_sigma``: use ``White(sigma)`` noise.

    White noise is not trace class in 2-D, so its SDE is built with the explicit
    ``allow_non_trace_class=True`` opt-in (a baseline, not a function-space method).
    ``reuse``: keep a finished run already in ``run_dir`` with the same config and SDE.
    Returns the trainer's summary plus ``seconds``.
    """
    import shutil

    from fsdiff.data import dataset_from_dict
    from fsdiff.io import write_toml
    from fsdiff.models import build_model
    from fsdiff.training.multilevel import MultilevelSchedule, hierarchy
    from fsdiff.training import train

    grid = cfg.grid.build()
    if white_sigma is None:
        sde = cfg.sde.build()
    else:
        sde = fd.VPSDE(fd.White(sigma=white_sigma), cfg.sde.beta_min, cfg.sde.beta_max, cfg.sde.schedule,
                       allow_non_trace_class=True)
    if reuse and run_dir.is_dir():
        from fsdiff.io import load_checkpoint
        from fsdiff.training import latest_checkpoint

        last = latest_checkpoint(run_dir)
        if last is not None:
            ck = load_checkpoint(last)
            if ck["config"] == cfg.to_dict() and ck.get("sde") == sde.to_dict() and ck["step"] == cfg.training.steps:
                print(f"reusing the finished run in {run_dir}", flush=True)
                return {"seconds": float(ck["metrics"]["wall_s"]), "step": ck["step"], "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    dataset = dataset_from_dict(cfg.data.spec())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.training.seed)
        model = build_model(cfg.model.spec(in_channels=int(getattr(dataset, "channels", 1))))
    ml = cfg.multilevel
    sched = MultilevelSchedule(hierarchy(grid, ml.levels or None), ml.schedule, fractions=ml.fractions or None,
                               probabilities=ml.probabilities or None, samples=ml.samples or None, level=ml.level)
    write_toml(run_dir / "config.toml", cfg.to_dict())
    t0 = time.perf_counter()
    out = train(model, sde, dataset, sched, cfg.training, run_dir, run_config=cfg.to_dict(), progress=progress,
                restrict_from_finest=ml.restrict_from_finest)
    out["seconds"] = time.perf_counter() - t0
    return out


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; floats with 4 significant digits."""
    def f(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# --- measures of the double-digit studies (sno_mnist2.py, sno_mnist2_baselines.py) ---

def half_logits(classifier, images: torch.Tensor) -> torch.Tensor:
    """``(n, 20)``: the digit classifier's logits of the left and right halves of ``images (n, 1, 28, 56)``."""
    from fsdiff.eval.classifier import to_classifier_grid

    g28 = fd.Grid((28, 28))
    with torch.no_grad():
        return torch.cat([classifier(to_classifier_grid(images[..., :28].float(), g28)),
                          classifier(to_classifier_grid(images[..., 28:].float(), g28))], 1)


def digits_right(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image, from :func:`half_logits`: are both halves the class's digits (``label // 10``, ``label % 10``)?"""
    return (logits[:, :10].argmax(-1) == labels // 10) & (logits[:, 10:].argmax(-1) == labels % 10)


def both_right(classifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image: are both halves classified as the class's digits? ``images (n, 1, 28, 56)`` -> ``(n,)`` bool."""
    return digits_right(half_logits(classifier, images), labels)


def pairwise_distance(x: torch.Tensor) -> float:
    """Mean RMS distance between distinct images of ``x (n, ...)`` (a diversity measure)."""
    f = x.flatten(1)
    d = torch.cdist(f, f) / f.shape[1] ** 0.5
    return float(d.sum() / (f.shape[0] * (f.shape[0] - 1)))


def nearest_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(n,)``: the RMS distance of each image of ``a`` to its nearest image in ``b``."""
    return (torch.cdist(a.flatten(1), b.flatten(1)) / a[0].numel() ** 0.5).min(1).values


def paired_bootstrap_ci(a: list[float], b: list[float], n_boot: int = 4000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a - b)`` over paired units (e.g. classes): ``(lo, hi)``.

    ``a, b``: one value per unit, in the same order. The units are resampled with replacement."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long lists of at least 2 paired values; got {len(a)} and {len(b)}")
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    idx = torch.randint(len(d), (n_boot, len(d)), generator=torch.Generator().manual_seed(seed))
    means = d[idx].mean(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    return lo, hi


def few_shot_metrics(classifier, c: int, x: torch.Tensor, real: torch.Tensor, floor_real: torch.Tensor,
                     support: torch.Tensor | None = None, others: torch.Tensor | None = None) -> dict:
    """One class's measures of generated images ``x (n, 1, 28, 56)`` of class ``c``.

    ``real``: held-out real images (the FD reference); ``floor_real``: other real images, the floor of
    FD and diversity and the reference of memorisation; ``support``: the K images the samples were made
    from; ``others``: K further real images of the class, a control for the memorisation measure (a
    model whose samples are merely smooth or typical is closer to *any* images of the class, not only
    to its support).
    """
    from fsdiff.data import CLASS_NAMES
    from fsdiff.eval.metrics import frechet_distance

    f_x, f_real = half_logits(classifier, x), half_logits(classifier, real)
    r = {"class": CLASS_NAMES[c], "both_right": float(digits_right(f_x, torch.full((x.shape[0],), c)).double().mean()),
         "diversity": pairwise_distance(x), "real_diversity": pairwise_distance(floor_real),
         "fd": frechet_distance(f_x, f_real), "fd_floor": frechet_distance(half_logits(classifier, floor_real), f_real)}
    if support is not None:
        r["nearest_support_samples"] = float(nearest_distance(x, support).mean())
        r["nearest_support_real"] = float(nearest_distance(floor_real, support).mean())
    if others is not None:
        r["nearest_others_samples"] = float(nearest_distance(x, others).mean())
        r["nearest_others_real"] = float(nearest_distance(floor_real, others).mean())
    return r


def cached_training(path: Path | None, key: dict, train, read, write, log=print):
    """``(result, training seconds)`` of ``train()``, or of the file at ``path`` when it was trained with ``key``.

    ``read(path) -> (stored key, load)`` reads a file's key, and ``load() -> (result, seconds)`` builds its result
    (called only when the keys match, so a file of another architecture is never loaded into this one);
    ``write(path, key, result, seconds)`` saves a new result (only when ``path`` is given). ``key`` is compared
    as JSON (tuples as lists)."""
    import json

    key = json.loads(json.dumps(key))
    if path is not None and Path(path).exists():
        stored, load = read(Path(path))
        if stored == key:
            log(f"reusing {path}")
            return load()
    t0 = time.perf_counter()
    result = train()
    seconds = time.perf_counter() - t0
    if path is not None:
        write(Path(path), key, result, seconds)
    return result, seconds


def write_summary(out: Path, text: str) -> None:
    """``out/summary.md``: the generated ``text``, then the hand-written ``out/reading.md`` if there is one
    (so a rerun refreshes the tables and keeps the reading)."""
    from fsdiff.io import write_text

    reading = Path(out) / "reading.md"
    if reading.exists():
        text = text.rstrip("\n") + "\n\n" + reading.read_text()
    write_text(Path(out) / "summary.md", text)


def checkpoint_study_main(doc: str, run, default_out: Path, argv: list[str] | None = None,
                          work_dir: str | None = None, options: dict[str, dict] | None = None) -> int:
    """The command line of a study that evaluates a few-shot checkpoint: ``--checkpoint``, ``--out``, ``--quick``,
    ``--threads``; calls ``run(checkpoint, out, quick, log)``. With ``work_dir`` (a study name) also
    ``--work-dir`` (default ``$TMPDIR/fsdiff-studies/<work_dir>``, not committed), passed as ``run(..., work_dir=)``.
    ``options``: further flags, ``{"--name": add_argument keywords}``, each passed as ``run(..., name=value)``."""
    import argparse

    from fsdiff._paths import PRETRAINED_DIR

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=PRETRAINED_DIR / "sno_double_digits.pt")
    p.add_argument("--out", type=Path, default=default_out)
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (not the reported numbers)")
    p.add_argument("--threads", type=int, default=1)
    if work_dir is not None:
        p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "fsdiff-studies" / work_dir,
                       help="where intermediate models go (reused when their settings match); not committed")
    dests = [p.add_argument(flag, **spec).dest for flag, spec in (options or {}).items()]
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    kw = {} if work_dir is None else {"work_dir": None if a.quick else a.work_dir}
    kw |= {d: getattr(a, d) for d in dests}
    run(a.checkpoint, a.out, a.quick, log=lambda s: print(s, flush=True), **kw)
    return 0
