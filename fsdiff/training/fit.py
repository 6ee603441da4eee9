"""The one small fitting loop behind every trainer except the function-space one.

The point-space models (WPO kernel scores, nonlinear DSM), the Score Neural Operator and the
evaluation classifier all train the same way: Adam on a loss that the caller's closure draws
(its batch and noise come from the caller's generator), an optional cosine schedule, gradient
clipping and EMA, a finiteness check that names the step, and an optional per-step hook that can
stop early. The function-space trainer (:func:`fsdiff.training.train`) adds checkpoints, exact
resume and multilevel schedules on top of the same :class:`EMA` and :func:`cosine_lr`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from .ema import EMA
from .schedule import cosine_lr

__all__ = ["FitResult", "fit"]


@dataclass
class FitResult:
    """What :func:`fit` ran: per-step losses, wall-clock seconds, steps taken and the EMA (if any)."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    ema: EMA | None = None


def fit(
    parameters: Iterable[nn.Parameter],
    loss_of_step: Callable[[int], torch.Tensor],
    steps: int,
    lr: float = 2e-3,
    *,
    schedule: str = "cosine",
    final_lr_ratio: float = 0.0,
    grad_clip: float | None = None,
    ema_of: nn.Module | None = None,
    ema_decay: float = 0.999,
    after_step: Callable[[int, float], bool] | None = None,
    name: str = "training",
    log: Callable[[str], None] | None = None,
    log_every: int = 500,
) -> FitResult:
    """Adam on ``loss_of_step(i).mean()`` for ``i = 0 .. steps - 1``.

    Parameters
    ----------
    parameters : what Adam updates.
    loss_of_step : ``i -> loss`` (any shape; its mean is minimised). It draws its own batch.
    schedule : ``"cosine"`` (from ``lr`` to ``final_lr_ratio * lr``, :func:`cosine_lr`) or ``"constant"``.
    grad_clip : clip the global gradient norm to this value (``None``: no clipping).
    ema_of : keep an :class:`EMA` of this module (decay ``ema_decay``), updated after every step.
    after_step : ``(i, loss) -> stop``; called after step ``i``; ``True`` ends training.
    name : used in the non-finite-loss error and in log lines.
    log, log_every : ``log(line)`` every ``log_every`` steps with the mean loss since the last line.

    Raises
    ------
    FloatingPointError
        naming the step, when the loss is not finite.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant'; got {schedule!r}")
    params = list(parameters)
    opt = torch.optim.Adam(params, lr=lr)
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda i: cosine_lr(i, steps, 1.0, 0, final_lr_ratio))
             if schedule == "cosine" else None)
    result = FitResult(ema=EMA(ema_of, ema_decay) if ema_of is not None else None)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = loss_of_step(i).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name} loss became non-finite at step {i}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        if result.ema is not None:
            result.ema.update(ema_of)
        value = float(loss.detach())
        result.losses.append(value)
        result.steps = i + 1
        if log is not None and (i + 1) % log_every == 0:
            recent = result.losses[-log_every:]
            log(f"{name} step {i + 1}/{steps} loss {sum(recent) / len(recent):.4f} ({time.perf_counter() - t0:.0f}s)")
        if after_step is not None and after_step(i, value):
            break
    result.seconds = time.perf_counter() - t0
    return result
