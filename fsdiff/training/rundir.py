"""Run-directory safety: one process per run directory, no half-written leftovers, explicit resume rules.

* :func:`run_lock` holds an exclusive ``fcntl.flock`` on ``RUN/.lock`` for the life of a ``train``
  (re-entrant within one process); a second process is refused with the holder's PID.
* :func:`remove_run_orphans` deletes the temporary files that a killed process left mid-write
  (fsdiff's own ``.<name>.<random>.tmp<suffix>`` pattern only), safe because the lock is held.
* :func:`resume_changes` compares the config stored in a checkpoint with the one a resume asks for:
  the fields of :data:`RESUMABLE_FIELDS` may change (they are recorded), anything else is refused
  with the field's name unless ``force``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ConfigError, RunDirectoryError
from ..io import remove_orphans

__all__ = ["LOCK_NAME", "RESUMABLE_FIELDS", "run_lock", "remove_run_orphans", "resume_changes"]

LOCK_NAME = ".lock"
#: config fields a resume may change: how long to train and how often to log, evaluate and save.
#: ``training.steps`` also moves the end of the cosine learning-rate schedule from that step on.
RESUMABLE_FIELDS = ("training.steps", "training.log_every", "training.eval_every", "training.checkpoint_every",
                    "training.keep_checkpoints", "training.time_limit_s")

_held: dict[Path, tuple[int, int]] = {}  # resolved run dir -> (file descriptor, depth) in this process


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run directory's exclusive lock (creating the folder and ``.lock``; removed on release).

    Raises :class:`~fsdiff.errors.RunDirectoryError` naming the holder's PID when another process
    holds it. Re-entrant in one process; released on exit, also when the process dies.
    """
    import fcntl

    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield run_dir
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirectoryError(f"{run_dir} is in use by another fsdiff process (PID {holder}, lock {path}); "
                                "wait for it to finish or use another run directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = (fd, 1)
    try:
        yield run_dir
    finally:
        del _held[key]
        try:
            path.unlink()  # while still held: a later process creates a fresh lock file
        except FileNotFoundError:
            pass
        os.close(fd)  # closing releases the flock


def remove_run_orphans(run_dir: str | os.PathLike) -> list[Path]:
    """Delete leftovers of crashed atomic writes in ``run_dir`` and ``run_dir/checkpoints``; returns them."""
    run_dir = Path(run_dir)
    return remove_orphans(run_dir) + remove_orphans(run_dir / "checkpoints", "step_*")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as ``{"section.key": value}`` (e.g. ``model.channels``, ``sde.covariance.tau``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_changes(stored: Mapping[str, Any], new: Mapping[str, Any], force: bool = False) -> dict[str, list]:
    """``{field: [stored value, new value]}`` for every field a resume changes; refuse the unsafe ones.

    Only the sections present in ``new`` are compared. A change outside :data:`RESUMABLE_FIELDS`
    raises :class:`~fsdiff.errors.ConfigError` naming the field, unless ``force``.
    """
    old_flat = _flatten({k: v for k, v in stored.items() if k in new})
    new_flat = _flatten(new)
    changes = {k: [old_flat.get(k), new_flat.get(k)] for k in sorted(set(old_flat) | set(new_flat))
               if _norm(old_flat.get(k)) != _norm(new_flat.get(k))}
    unsafe = [k for k in changes if k not in RESUMABLE_FIELDS]
    if unsafe and not force:
        k = unsafe[0]
        raise ConfigError(f"{k}: cannot change on resume (stored {changes[k][0]!r}, asked {changes[k][1]!r}); "
                          f"only {', '.join(RESUMABLE_FIELDS)} may change; pass --force-config to override"
                          + (f" (also changed: {', '.join(unsafe[1:])})" if len(unsafe) > 1 else ""))
    return changes


def _norm(v: Any) -> Any:
    """Lists and tuples compare equal; nested tables compare by content."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _norm(x) for k, x in v.items()}
    return v
