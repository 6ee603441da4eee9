"""Shared argument checks: one copy of each (time broadcasting, positive integers).

Every public function that takes diffusion times as "a float or one per sample" goes through
:func:`batch_times`; the error names the shape it got and the shape it expected.
"""

from __future__ import annotations

import math

import torch

__all__ = ["as_time", "per_sample", "batch_times", "check_times", "positive_int", "check_generator", "check_finite",
           "check_float_dtype"]


def as_time(t: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` as a tensor (a float becomes 0-d float64), on ``like``'s device if given; any shape."""
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t), dtype=torch.float64)
    if like is not None:
        t = t.to(device=like.device)
    return t


def per_sample(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample coefficient ``(B,)`` (or a scalar) against ``x`` of shape ``(B, ...)``."""
    c = c.to(device=x.device, dtype=x.dtype)
    if c.ndim == 0:
        return c
    if c.shape[0] != x.shape[0] or c.ndim != 1:
        raise ValueError(f"time has shape {tuple(c.shape)}; expected a scalar or ({x.shape[0]},) for x of shape {tuple(x.shape)}")
    return c.reshape(-1, *([1] * (x.ndim - 1)))


def batch_times(
    t: torch.Tensor | float,
    shape: int | tuple[int, ...],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``t`` (a float, a 0-d tensor or a tensor of ``shape``) as a tensor of ``shape``.

    ``shape`` is the batch size ``B`` (result ``(B,)``) or a full shape (e.g. ``(B, P)`` for one
    time per point). A scalar is broadcast (a view, no copy); anything else must match exactly.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    t = torch.as_tensor(t, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(shape)
    if tuple(t.shape) != shape:
        raise ValueError(f"t has shape {tuple(t.shape)}; t must be a float or have shape {shape} "
                         "(one time per sample)")
    return t


def check_times(t: torch.Tensor, T: float, what: str = "t") -> torch.Tensor:
    """``t`` (any shape) must be finite and lie in ``[0, T]``; returns it. One reduction per call."""
    lo, hi = float(t.min()), float(t.max())
    if not (math.isfinite(lo) and math.isfinite(hi) and lo >= 0.0 and hi <= T):
        raise ValueError(f"{what} must lie in [0, T = {T}]; got values in [{lo}, {hi}]")
    return t


def check_generator(generator, what: str = "generator") -> None:
    """``generator`` must be ``None`` or a ``torch.Generator`` (not a seed: pass ``torch.Generator().manual_seed(s)``)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{what} must be a torch.Generator or None; got {type(generator).__name__} "
                        f"(for a seed s, pass torch.Generator().manual_seed(s))")


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` must hold only finite values; one reduction per call.

    A finite sum implies finite entries (NaN and Inf propagate through addition), and a sum is
    4-17x cheaper than ``isfinite(x).all()`` (28² to 256², ``benchmarks/bench_checks.py``); only
    when the sum is not finite (a bad entry, or an overflow of finite ones) are the entries
    checked one by one.
    """
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} holds {bad} non-finite value(s) (NaN or Inf) out of {x.numel()}")
    return x


def check_float_dtype(dtype: torch.dtype, what: str = "dtype") -> torch.dtype:
    """``dtype`` must be a real floating dtype (functions are real-valued)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{what} must be a floating torch dtype (torch.float32 or torch.float64); got {dtype!r}")
    return dtype


def positive_int(value, name: str = "n") -> int:
    """``value`` (an integer, or an integral float such as ``3.0``) as an ``int >= 1``.

    Anything else (``2.5``, ``0``, ``"3"``, ``True``) is a ``ValueError`` naming ``name``.
    """
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)
