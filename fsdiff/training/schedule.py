"""The one learning-rate schedule: linear warm-up, then a half cosine to a floor."""

from __future__ import annotations

import math

from ..config import TrainingConfig

__all__ = ["cosine_lr", "lr_at"]


def cosine_lr(step: int, steps: int, peak: float = 1.0, warmup_steps: int = 0, final_ratio: float = 0.0) -> float:
    """Learning rate at step ``step`` (0-based): in ``[final_ratio * peak, peak]``.

    Linear warm-up over ``warmup_steps`` (``peak (step + 1) / warmup_steps``), then a half cosine
    from ``peak`` down to ``final_ratio * peak`` at step ``steps``, constant after it. With
    ``peak = 1`` it is the multiplier of a ``LambdaLR``.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(steps - warmup_steps, 1)
    frac = min((step - warmup_steps) / span, 1.0)
    lo = final_ratio * peak
    return lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * frac))


def lr_at(step: int, cfg: TrainingConfig) -> float:
    """Learning rate of step ``step`` of the function-space trainer (:func:`cosine_lr` of ``cfg``)."""
    return cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.final_lr_ratio)
