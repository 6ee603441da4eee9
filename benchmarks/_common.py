"""Shared benchmark helpers: allocator setting, timing medians, table printing."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch

from fsdiff.app.runtime import allocator_setting, tune_allocator


def set_malloc() -> str:
    """Keep freed memory in the process (:func:`fsdiff.app.runtime.tune_allocator`); returns how it was set."""
    return tune_allocator()


def malloc_setting() -> str:
    """The allocator setting in force, as set by :func:`set_malloc`."""
    return allocator_setting()


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
