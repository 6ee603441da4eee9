"""Write a few-shot checkpoint with the sampling settings the guidance study chose (issue 14).

``sno_mnist2_guidance.py`` chooses the guidance weight, interval and per-K support augmentation on
validation classes and records them as ``results.json["recommendation"]``, with its test figures.
This script copies the trained checkpoint it evaluated and sets ``config["sampling"]`` to that
recommendation, with a ``note`` naming where the model and the choice come from, so the shipped
file is reproducible from the two study outputs. It refuses a results file that evaluated another
checkpoint (its ``checkpoint`` field names a different path) and writes atomically.

Run: ``python resolution_studies/ship_sno_sampling.py --checkpoint FEW_SHOT.pt --results
results/sno_mnist2_guidance/results.json --out pretrained/sno_double_digits.pt --note "trained by ..."``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fsdiff.io import load_checkpoint, save_checkpoint
from fsdiff.sno.latent import FEW_SHOT_KIND, recommended_augmentation, recommended_guidance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sno_mnist2_guidance import memorisation_ratio, support_pull  # noqa: E402


def sampling_block(results: dict, trained_by: str) -> dict:
    """``config["sampling"]`` from the guidance study's ``results``: its recommendation and a provenance note."""
    rec = dict(results["recommendation"])
    test = results["test"]
    chosen = results["chosen"]
    figures = []
    for k in (1, 5, 50):
        a = test.get(chosen["K1" if k < 5 else "K5"], {}).get(f"K{k}")
        if a is not None:
            figures.append(f"K = {k}: both right {a['both_right']:.2f}, memorisation ratio {memorisation_ratio(a):.2f} "
                           f"(support / control {support_pull(a):.2f})")
    rec["note"] = (f"{trained_by}; sampling settings chosen on validation classes {', '.join(results['validation_classes'])} "
                   f"by resolution_studies/sno_mnist2_guidance.py (rule: {results['rule']}): {chosen['K1']} for K < 5, "
                   f"{chosen['K5']} for K >= 5. Unseen test classes: " + "; ".join(figures) + ".")
    return rec


def ship(checkpoint: Path, results_path: Path, out: Path, trained_by: str) -> Path:
    results = json.loads(Path(results_path).read_text())
    if Path(results["checkpoint"]).resolve() != Path(checkpoint).resolve():
        raise ValueError(f"{results_path} evaluated {results['checkpoint']}, not {checkpoint}")
    ck = load_checkpoint(checkpoint)
    if ck.get("kind") != FEW_SHOT_KIND:
        raise ValueError(f"{checkpoint} is not a few-shot checkpoint (kind {ck.get('kind')!r})")
    config = dict(ck.get("config") or {})
    config["sampling"] = sampling_block(results, trained_by)
    recommended_guidance(config)   # the block must read back (raises on a malformed one)
    recommended_augmentation(config, 1)
    return save_checkpoint(out, {**ck, "config": config})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="the trained few_shot.pt the guidance study tested")
    p.add_argument("--results", type=Path, required=True, help="the guidance study's results.json")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--note", required=True, help="how the model was trained (the first part of the provenance note)")
    a = p.parse_args(argv)
    print(ship(a.checkpoint, a.results, a.out, a.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
