"""Shared benchmark helpers: allocator setting, timing medians, table printing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import statistics
import time
from typing import Callable

import torch

_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": 4294967296,
    "MALLOC_TRIM_THRESHOLD_": 4294967296,
    "MALLOC_TOP_PAD_": 1073741824,
}
# glibc mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

_how_set = "glibc default"


def set_malloc() -> str:
    """Keep freed memory in the process (no munmap/trim of big tensors); returns how it was set.

    If the ``MALLOC_*_`` environment variables are present, glibc already read them at start-up;
    otherwise call ``mallopt`` through ctypes (glibc only; elsewhere it is a no-op).
    """
    global _how_set
    if all(k in os.environ for k in _MALLOC_ENV):
        _how_set = "env " + " ".join(f"{k}={os.environ[k]}" for k in _MALLOC_ENV)
        return _how_set
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt takes an int: the mmap threshold is capped at 32 MiB * 8 on 64-bit glibc
        ok = [
            libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30),
            libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1),
            libc.mallopt(_M_TOP_PAD, 1 << 30),
        ]
        _how_set = "mallopt(MMAP_THRESHOLD=1GiB, TRIM_THRESHOLD=2GiB-1, TOP_PAD=1GiB)" if all(ok) else f"mallopt failed {ok}"
    except OSError as e:  # not glibc
        _how_set = f"glibc default (mallopt unavailable: {e})"
    return _how_set


def malloc_setting() -> str:
    """The allocator setting in force, as set by :func:`set_malloc`."""
    return _how_set


def timeit(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> list[float]:
    """Wall times (s) of ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1) -> dict[str, list[float]]:
    """Time several functions round-robin, so background load hits each alike; returns times per name."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    print(f"# malloc: {malloc_setting()}")
