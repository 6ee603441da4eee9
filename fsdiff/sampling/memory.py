"""The memory bound of sampling: how many fields one model evaluation may take for a memory budget.

Sampling keeps the whole state ``(n, C, *grid)`` and a few temporaries of it (the step's drift and
noise, Heun's predictor), and evaluates the network on chunks of ``chunk`` fields. Its peak is

    peak ≈ n C P · STATE_BYTES + chunk P w · BYTES_PER_ACTIVATION,

with ``P`` the grid points and ``w`` the network's activation channels at full resolution (the FNO's
``width``, the U-shaped operator's first level). Both constants were measured by
``benchmarks/bench_memory.py`` (fp32 state; see ``benchmarks/results/memory.txt``) and carry a
margin. :func:`chunk_size_for` inverts this for a budget, so the peak is O(n P + chunk P).
"""

from __future__ import annotations

import math
import re

from ..grid import Grid

__all__ = ["parse_memory", "activation_channels", "sampling_bytes", "chunk_size_for", "STATE_BYTES",
           "BYTES_PER_ACTIVATION"]

#: bytes per grid point and field of the sampler's state and its temporaries (fp32)
STATE_BYTES = 48
#: bytes per grid point, activation channel and chunk element of one network evaluation (fp32)
BYTES_PER_ACTIVATION = 16

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text: str | int) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or a number of bytes -> bytes (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
        if m is None:
            raise ValueError(f"memory must be a size such as 512M, 8G or 1.5GiB; got {text!r}")
        value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not value > 0:
        raise ValueError(f"memory must be positive; got {text!r}")
    return int(value)


def activation_channels(model) -> int:
    """The network's widest full-resolution activation: ``width`` (FNO) or ``channels[0]`` (U-shaped
    operator) found in ``model.spec`` (nested specs searched); 64 when the spec names neither."""
    found: list[int] = []

    def walk(spec) -> None:
        if isinstance(spec, dict):
            if isinstance(spec.get("width"), int):
                found.append(spec["width"])
            ch = spec.get("channels")
            if isinstance(ch, (list, tuple)) and ch and isinstance(ch[0], int):
                found.append(int(ch[0]))
            for v in spec.values():
                walk(v)

    walk(getattr(model, "spec", None))
    return max(found) if found else 64


def sampling_bytes(model, grid: Grid, n: int, channels: int, chunk: int) -> int:
    """Estimated peak bytes of sampling ``n`` fields of ``channels`` on ``grid`` in chunks of ``chunk``."""
    points = math.prod(grid.shape)
    return int(n * channels * points * STATE_BYTES + chunk * points * activation_channels(model) * BYTES_PER_ACTIVATION)


def chunk_size_for(model, grid: Grid, n: int, channels: int, max_bytes: int) -> int:
    """The largest chunk (at most ``n``) whose estimated peak stays within ``max_bytes``.

    ``ValueError`` naming the smallest budget that works when not even one field per chunk fits.
    """
    fixed = sampling_bytes(model, grid, n, channels, 0)
    per = sampling_bytes(model, grid, n, channels, 1) - fixed
    chunk = (int(max_bytes) - fixed) // per
    if chunk < 1:
        need = (fixed + per) / 2**30
        raise ValueError(f"{n} fields on {grid.shape} need about {need:.2f} GiB with one field per model call "
                         f"(more than the {max_bytes / 2**30:.2f} GiB allowed): raise --max-memory or sample fewer "
                         "fields per call")
    return int(min(chunk, n))
