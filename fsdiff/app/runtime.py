"""Process set-up for commands, studies and benchmarks: the one place that tunes glibc's allocator.

On CPU, glibc's default thresholds return every freed block above 32 MB to the OS, and the page
faults of re-allocating it cost more than the maths at 64² and above (3-4x per training step,
see ``../shared/DESIGN.md``). :func:`tune_allocator` keeps freed memory in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MALLOC_ENV", "tune_allocator", "allocator_setting"]

#: the same setting as environment variables (read by glibc at process start; for re-exec)
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "1073741824",
}
# glibc mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

_setting = "glibc default"


def tune_allocator() -> str:
    """Keep freed memory in the process; returns how it was set (also :func:`allocator_setting`).

    If the ``MALLOC_*_`` variables of :data:`MALLOC_ENV` are set, glibc already read them at start;
    otherwise ``mallopt`` is called through ctypes (glibc only; elsewhere nothing changes).
    """
    global _setting
    if all(k in os.environ for k in MALLOC_ENV):
        _setting = "env " + " ".join(f"{k}={os.environ[k]}" for k in MALLOC_ENV)
        return _setting
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt takes an int; glibc caps the mmap threshold at 32 MiB * 8 on 64-bit
        ok = [libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30), libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1),
              libc.mallopt(_M_TOP_PAD, 1 << 30)]
        _setting = ("mallopt(MMAP_THRESHOLD=1GiB, TRIM_THRESHOLD=2GiB-1, TOP_PAD=1GiB)" if all(ok)
                    else f"mallopt failed {ok}")
    except (OSError, AttributeError) as e:  # not glibc
        _setting = f"default allocator (mallopt unavailable: {e})"
    return _setting


def allocator_setting() -> str:
    """The allocator setting in force, as last set by :func:`tune_allocator`."""
    return _setting
