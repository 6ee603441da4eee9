"""Plain-data input/output: atomic writes, checkpoints, JSON/CSV metrics, a small TOML writer.

Checkpoints are dictionaries of plain data only (numbers, strings, lists, dicts, tensors)::

    {format_version, config, model: {spec, state_dict}, ema, optimizer, step, rng, metrics}

They are written atomically (temporary file in the same directory, then ``os.replace``) and
read with ``torch.load(weights_only=True)``, so loading never executes pickled code.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .errors import CheckpointError, OutputError

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "OutputError",
    "check_writable",
    "load_state",
    "remove_orphans",
    "TEMP_PATTERN",
    "atomic_write",
    "save_checkpoint",
    "load_checkpoint",
    "write_json",
    "read_json",
    "write_csv",
    "dumps_toml",
    "write_toml",
]

#: Version of the checkpoint layout written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format_version", "config", "model", "step")




def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success rename it into place.

    On any exception the temporary file is removed and ``path`` keeps its previous content; an
    ``OSError`` (disk full, read-only file system, a file where a folder should be) becomes an
    :class:`~fsdiff.errors.OutputError` naming ``path``. The file gets the usual permissions
    (``0o666 & ~umask``), not ``mkstemp``'s 0600. Temporary names match :data:`TEMP_PATTERN`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _output_error(path, e) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise _output_error(path, e) from None
        raise


#: glob of the temporary files :func:`atomic_path` creates next to ``<stem><suffix>``
TEMP_PATTERN = ".*.tmp*"


def _output_error(path: Path, e: OSError) -> OutputError:
    reason = e.strerror or str(e)
    return OutputError(e.errno, f"cannot write {path}: {reason}")


def check_writable(path: str | os.PathLike) -> Path:
    """Refuse, before any expensive work, an output ``path`` that cannot be written.

    The nearest existing ancestor folder must be a writable directory, and ``path`` itself must
    not be a directory. Raises :class:`~fsdiff.errors.OutputError` naming the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(21, f"cannot write {path}: it is a directory")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(20, f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(13, f"cannot write {path}: {parent} is not writable")
    return path


def remove_orphans(folder: str | os.PathLike, stem_glob: str = "*") -> list[Path]:
    """Delete temporary files that crashed atomic writes left in ``folder`` (fsdiff's own pattern only).

    Only names ``.<stem>.<random>.tmp<suffix>`` with ``<stem>`` matching ``stem_glob`` are touched;
    returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.glob(f".{stem_glob}.*.tmp*"):
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it into place.

    Nothing is left half-written: on any exception the temporary file is removed and ``path``
    keeps its previous content.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | os.PathLike, ckpt: Mapping[str, Any]) -> Path:
    """Write a checkpoint dictionary atomically; ``format_version`` is filled in if absent."""
    missing = [k for k in _REQUIRED_KEYS if k != "format_version" and k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint is missing keys {missing}")
    data = dict(ckpt)
    data.setdefault("format_version", CHECKPOINT_FORMAT_VERSION)
    buf = _io.BytesIO()
    torch.save(data, buf)  # serialise fully before touching the file system
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _load_failure(e: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in fsdiff's words (never torch's advice to unpickle code)."""
    import re

    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"it holds a pickled object ({m.group(1)}), not plain data"
    m = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text)
    if m:
        return f"unreadable pickle data ({m.group(1).strip()}): not a torch file, or a truncated one"
    if isinstance(e, EOFError) or not text.strip():
        return "the file is empty or truncated"
    first = text.strip().splitlines()[0]
    if "weights_only" in first:
        first = "unreadable data"
    return f"{type(e).__name__}: {first[:200]}"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file if it is missing, is not
    a torch file, holds non-plain objects, or lacks the fsdiff checkpoint keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not an fsdiff checkpoint"
        reason = _load_failure(e)
        raise CheckpointError(f"{path} is not an fsdiff checkpoint ({reason}); fsdiff reads only plain-data "
                              "checkpoints it wrote itself") from None
    if not isinstance(data, dict) or any(k not in data for k in _REQUIRED_KEYS):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not an fsdiff checkpoint: expected keys {list(_REQUIRED_KEYS)}, found {keys}")
    version = data["format_version"]
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format_version {version!r} (this fsdiff reads <= {CHECKPOINT_FORMAT_VERSION})")
    model = data["model"]
    if not isinstance(model, dict) or "spec" not in model or "state_dict" not in model:
        raise CheckpointError(f"{path}: checkpoint 'model' entry must hold 'spec' and 'state_dict'")
    return data


def load_state(module: torch.nn.Module, state_dict: Mapping[str, Any], path: str | os.PathLike,
               stored_spec: Any = None, current_spec: Any = None) -> None:
    """``module.load_state_dict(state_dict)``, or a :class:`CheckpointError` that says why not.

    The message names the checkpoint, the missing and unexpected keys, the tensors whose shapes
    differ, and the entries where the model spec stored with the weights differs from the
    module's own (e.g. a changed ``model.width``).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(k for k in set(own) & set(state_dict)
                    if isinstance(state_dict[k], torch.Tensor) and tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)}"
                         + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
        if isinstance(stored_spec, dict) and isinstance(current_spec, dict):
            diff = {k: (stored_spec.get(k), current_spec.get(k)) for k in sorted(set(stored_spec) | set(current_spec))
                    if stored_spec.get(k) != current_spec.get(k)}
            if diff:
                parts.append("model spec differs: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items()))
        raise CheckpointError(f"{path}: the weights do not fit the model: " + "; ".join(parts))
    module.load_state_dict(state_dict)


# ------------------------------------------------------------------ JSON / CSV
def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def _clean(o: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (non-finite floats become ``null``)."""
    text = json.dumps(_clean(data), indent=2, default=_json_default, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text + "\n"), binary=False)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Path:
    """Atomically write rows of dicts; columns default to the union of keys in first-seen order."""
    rows = list(rows)
    if columns is None:
        columns = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)

    def write(f):
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})

    return atomic_write(path, write, binary=False)


# ------------------------------------------------------------------ TOML
def _toml_key(k: str) -> str:
    k = str(k)
    if k and all(c.isalnum() or c in "-_" for c in k):
        return k
    return json.dumps(k)


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, f"{where}[{i}]") for i, x in enumerate(v)) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x, f'{where}.{k}')}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {where} of type {type(v).__name__} as TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialise a nested dict of plain data to TOML (tables for dicts; inline tables inside lists).

    ``None`` values are omitted (TOML has no null). ``tomllib.loads(dumps_toml(d))`` gives ``d`` back.
    """
    lines: list[str] = []

    def table(d: Mapping[str, Any], prefix: str) -> None:
        scalars = [(k, v) for k, v in d.items() if v is not None and not isinstance(v, Mapping)]
        subs = [(k, v) for k, v in d.items() if isinstance(v, Mapping)]
        if prefix and (scalars or not subs):
            lines.append(f"[{prefix}]")
        for k, v in scalars:
            lines.append(f"{_toml_key(k)} = {_toml_value(v, f'{prefix}.{k}' if prefix else str(k))}")
        if scalars:
            lines.append("")
        for k, v in subs:
            table(v, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k))

    table(data, "")
    return "\n".join(lines).rstrip() + "\n"


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_toml(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Atomically write a nested dict as TOML (see :func:`dumps_toml`)."""
    text = dumps_toml(data)
    return atomic_write(path, lambda f: f.write(text), binary=False)


# ------------------------------------------------------------------ netCDF
def write_netcdf(path: str | os.PathLike, data) -> Path:
    """Write an ``xarray.Dataset``/``DataArray`` as netCDF (scipy engine, netCDF3) atomically."""
    payload = bytes(data.to_netcdf(engine="scipy"))  # serialise in memory first
    return atomic_write(path, lambda f: f.write(payload))


def read_netcdf(path: str | os.PathLike):
    """Open a netCDF file written by :func:`write_netcdf` fully into memory (``xarray.Dataset``)."""
    import xarray as xr

    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()
