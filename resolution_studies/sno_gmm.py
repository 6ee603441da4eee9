"""Score Neural Operator on a family of 2-D Gaussian mixtures: one score model for many distributions.

What it shows: an SNO (FNO encoder of the kernel mean embedding on a grid, pooled by quadrature,
NOMAD decoder) trained by conditional DSM on 67 Gaussian mixtures (3 of 9 lattice cells) scores
17 *unseen* cell combinations, compared with exact scores, with an unconditional model of the
family and with per-distribution models trained on the unseen mixture itself (the upper bound);
how the score error and the MMD of generated samples depend on the number n of samples the
encoding is built from (n = 1 .. 1024, the few-shot curve); and that the score error does not
depend on the encoding grid (16², 32², 64²; the model is trained at 32²).

Defaults: lattice 3x3, spacing 1, 3 components of std 0.15, kernel bandwidth 0.2, box [-2.5, 2.5)²,
VP SDE beta 0.1..20, 2000 Adam steps for every model, 1000 generated samples (200 EM steps),
score errors on 20 times in [0.05, 1] with 1024 points each.
Runtime: ~10 min on one CPU thread (see ``timings`` in results.json for the measured figure).

Run: ``python resolution_studies/sno_gmm.py [--config configs/sno_gmm.toml] [--out DIR] [--quick]``;
writes ``resolution_studies/results/sno_gmm/{summary.md, results.json, score_error_vs_t.nc,
samples.nc, samples.png, score_fields.png, curves.png, encodings.png, sno.pt}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib
from pathlib import Path

import torch

from fsdiff.tasks.gmm_study import SNOGMMStudyConfig, run_sno_gmm_study

OUT = Path(__file__).resolve().parent / "results" / "sno_gmm"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="TOML file with a [study] table of SNOGMMStudyConfig fields")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (not the reported numbers)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = SNOGMMStudyConfig()
    if a.config is not None:
        with open(a.config, "rb") as f:
            cfg = SNOGMMStudyConfig.from_dict(tomllib.load(f).get("study", {}))
    if a.quick:
        cfg = dataclasses.replace(cfg, steps=60, eval_times=4, eval_points=256, n_generate=200, sample_steps=30,
                                  few_shot_ns=(1, 16), n_seen_eval=2)
    run_sno_gmm_study(cfg, a.out, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
