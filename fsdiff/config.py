"""Run configuration: frozen dataclasses read from TOML.

A run file has the tables ``[grid]``, ``[sde]`` (with ``[sde.covariance]``), ``[model]``,
``[data]``, ``[training]`` and ``[multilevel]`` plus a top-level ``name``; see
``configs/synthetic.toml``. :func:`load_config` reads one with :mod:`tomllib`, applies
``section.key=value`` overrides (values parsed as TOML literals; a bare word that is not a
TOML literal is taken as a string), and validates: unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the key (e.g. ``training.steps``).
``RunConfig.to_dict()`` is plain data and round-trips through :func:`fsdiff.io.dumps_toml`.

``[model]`` and ``[data]`` hold a ``type`` plus that type's parameters; they are passed
verbatim to :func:`fsdiff.models.build_model` / :func:`fsdiff.data.dataset_from_dict`, which
validate them. ``[sde.covariance]`` is a :func:`fsdiff.covariance_from_dict` table.
"""

import dataclasses
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .covariance import covariance_from_dict
from .errors import ConfigError
from .grid import Grid
from ._seeds import MAX_SHARDS
from .losses import TIME_SAMPLINGS, WEIGHTINGS

#: ``training.precision``: fp32, or bf16 autocast with the FFTs in fp32
PRECISIONS = ("fp32", "bf16")

__all__ = [
    "ConfigError",
    "dataclass_from_table",
    "GridConfig",
    "SDEConfig",
    "ModelConfig",
    "DataConfig",
    "TrainingConfig",
    "MultilevelConfig",
    "RunConfig",
    "load_config",
    "config_from_dict",
    "apply_overrides",
]




def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class GridConfig:
    """The finest (target) grid: ``shape`` points per axis on ``[0, length)^d``."""

    shape: tuple[int, ...] = (32, 32)
    length: float = 1.0

    def __post_init__(self):
        if not 1 <= len(self.shape) <= 3 or any(n < 4 for n in self.shape):
            _fail("grid.shape", f"needs 1-3 axes of at least 4 points; got {list(self.shape)}")
        if not (math.isfinite(self.length) and self.length > 0):
            _fail("grid.length", f"must be a positive number; got {self.length}")

    def build(self) -> Grid:
        return Grid(self.shape, self.length)


@dataclass(frozen=True)
class SDEConfig:
    """``type = "vp"`` (``beta_min``, ``beta_max``, ``schedule``) or ``"ve"`` (``sigma_min``, ``sigma_max``)."""

    type: str = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    schedule: str = "linear"
    sigma_min: float = 0.01
    sigma_max: float = 10.0
    covariance: dict = field(default_factory=lambda: {"type": "matern", "alpha": 2.0, "tau": 3.0, "sigma": 1.0})
    allow_non_trace_class: bool = False  # opt in to white noise etc. for baselines only

    def __post_init__(self):
        if self.type not in ("vp", "ve"):
            _fail("sde.type", f"must be 'vp' or 've'; got {self.type!r}")
        if self.type == "vp" and not 0 <= self.beta_min < self.beta_max:
            _fail("sde.beta_max", f"need 0 <= beta_min < beta_max; got {self.beta_min}, {self.beta_max}")
        if self.schedule not in ("linear", "cosine"):
            _fail("sde.schedule", f"must be 'linear' or 'cosine'; got {self.schedule!r}")
        if self.type == "ve" and not 0 < self.sigma_min < self.sigma_max:
            _fail("sde.sigma_max", f"need 0 < sigma_min < sigma_max; got {self.sigma_min}, {self.sigma_max}")
        try:
            covariance_from_dict(dict(self.covariance))
        except (ValueError, TypeError, KeyError) as e:
            _fail("sde.covariance", str(e))

    def to_sde_dict(self) -> dict:
        """The :func:`fsdiff.sde_from_dict` spec."""
        extra = {"allow_non_trace_class": True} if self.allow_non_trace_class else {}
        if self.type == "vp":
            return {"type": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max, "schedule": self.schedule,
                    "covariance": dict(self.covariance), **extra}
        return {"type": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "covariance": dict(self.covariance),
                **extra}

    def build(self):
        from .sde import sde_from_dict

        return sde_from_dict(self.to_sde_dict())


@dataclass(frozen=True)
class ModelConfig:
    """``type`` plus constructor parameters, passed verbatim to ``fsdiff.models.build_model``."""

    type: str = "fno_score"
    params: dict = field(default_factory=lambda: {"width": 32, "modes": [12, 12], "n_layers": 4})

    def spec(self, in_channels: int | None = None) -> dict:
        out = {"type": self.type, **self.params}
        if in_channels is not None:
            out.setdefault("in_channels", in_channels)
        return out


@dataclass(frozen=True)
class DataConfig:
    """``type`` plus parameters, passed verbatim to ``fsdiff.data.dataset_from_dict``."""

    type: str = "gaussian_random_field"
    params: dict = field(default_factory=lambda: {"covariance": {"type": "matern", "alpha": 2.0, "tau": 3.0, "sigma": 8.0}})

    def spec(self) -> dict:
        return {"type": self.type, **self.params}


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and bookkeeping. Step counts are optimiser steps; 0 disables where noted."""

    steps: int = 1000
    batch_size: int = 32
    micro_batch_size: int = 0  # 0: the whole batch at once
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 0
    final_lr_ratio: float = 0.0  # cosine decay from lr to final_lr_ratio * lr
    ema_decay: float = 0.999  # 0: EMA = current weights
    grad_clip: float = 1.0  # 0: no clipping
    time_sampling: str = "uniform"
    weighting: str = "none"
    eps: float = 1e-3
    seed: int = 0
    n_val: int = 64
    val_seed: int = 12345
    eval_every: int = 100  # 0: only at the end
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 1
    time_limit_s: float = 0.0  # 0: none; else stop (with a checkpoint) once training wall-clock exceeds it
    data_shards: int = 1  # the batch is drawn as this many shards, each with its own streams (data parallel)
    precision: str = "fp32"  # "bf16": autocast matmuls and convolutions to bfloat16 (the FFTs stay fp32)
    compile: bool = False  # torch.compile the model for training

    def __post_init__(self):
        positive = ("steps", "batch_size", "n_val", "keep_checkpoints", "log_every")
        for k in positive:
            if getattr(self, k) < 1:
                _fail(f"training.{k}", f"must be >= 1; got {getattr(self, k)}")
        for k in ("micro_batch_size", "warmup_steps", "eval_every", "checkpoint_every", "weight_decay", "grad_clip",
                  "time_limit_s"):
            if getattr(self, k) < 0:
                _fail(f"training.{k}", f"must be >= 0; got {getattr(self, k)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            _fail("training.lr", f"must be a positive number; got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _fail("training.betas", f"must be two numbers in [0, 1); got {list(self.betas)}")
        if not 0 <= self.final_lr_ratio <= 1:
            _fail("training.final_lr_ratio", f"must lie in [0, 1]; got {self.final_lr_ratio}")
        if not 0 <= self.ema_decay < 1:
            _fail("training.ema_decay", f"must lie in [0, 1); got {self.ema_decay}")
        if self.time_sampling not in TIME_SAMPLINGS:
            _fail("training.time_sampling", f"must be one of {TIME_SAMPLINGS}; got {self.time_sampling!r}")
        if self.weighting not in WEIGHTINGS:
            _fail("training.weighting", f"must be one of {WEIGHTINGS}; got {self.weighting!r}")
        if not 0 < self.eps < 1:
            _fail("training.eps", f"must lie in (0, 1); got {self.eps}")
        if not 1 <= self.data_shards <= MAX_SHARDS:
            _fail("training.data_shards", f"must lie in [1, {MAX_SHARDS}]; got {self.data_shards}")
        if self.batch_size % self.data_shards:
            _fail("training.batch_size", f"must be a multiple of training.data_shards ({self.data_shards}); "
                                         f"got {self.batch_size}")
        if self.precision not in PRECISIONS:
            _fail("training.precision", f"must be one of {PRECISIONS}; got {self.precision!r}")


@dataclass(frozen=True)
class MultilevelConfig:
    """Resolution hierarchy (points per axis, coarse to fine; empty = the grid alone) and schedule."""

    levels: tuple[int, ...] = ()
    schedule: str = "single"
    fractions: tuple[float, ...] = ()
    probabilities: tuple[float, ...] = ()
    samples: tuple[int, ...] = ()
    level: int = -1
    restrict_from_finest: bool = True  # level data = Fourier restriction of finest data (needed for
    # mlmc unbiasedness unless the data set is Fourier-nested, e.g. a GRF; false samples each level directly)

    def __post_init__(self):
        from .training.multilevel import SCHEDULES  # the schedule table's owner (imported late: no cycle)

        if self.schedule not in SCHEDULES:
            _fail("multilevel.schedule", f"must be one of {SCHEDULES}; got {self.schedule!r}")
        n = max(len(self.levels), 1)
        if any(b <= a for a, b in zip(self.levels, self.levels[1:])) or any(v < 4 for v in self.levels):
            _fail("multilevel.levels", f"must be strictly increasing, each >= 4; got {list(self.levels)}")
        for k in ("fractions", "probabilities", "samples"):
            v = getattr(self, k)
            if v and len(v) != n:
                _fail(f"multilevel.{k}", f"needs one entry per level ({n}); got {list(v)}")
            if any(x < 0 for x in v) or (v and sum(v) <= 0):
                _fail(f"multilevel.{k}", f"entries must be non-negative with a positive sum; got {list(v)}")
        if self.samples and min(self.samples) < 1:
            _fail("multilevel.samples", f"entries must be >= 1; got {list(self.samples)}")
        if not -n <= self.level < n:
            _fail("multilevel.level", f"must index one of the {n} levels; got {self.level}")


@dataclass(frozen=True)
class RunConfig:
    """A whole run: ``name`` and one dataclass per section."""

    name: str = "run"
    grid: GridConfig = field(default_factory=GridConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    multilevel: MultilevelConfig = field(default_factory=MultilevelConfig)

    def __post_init__(self):
        if self.multilevel.levels:
            g = self.grid.shape
            if len(set(g)) != 1 or self.multilevel.levels[-1] != g[0]:
                _fail("multilevel.levels", f"the last level must equal the grid's points per axis {list(g)}; "
                      f"got {list(self.multilevel.levels)}")

    def to_dict(self) -> dict:
        """Plain nested data (lists, not tuples); ``config_from_dict(to_dict())`` rebuilds it."""
        out: dict[str, Any] = {"name": self.name}
        for sec in ("grid", "sde", "training", "multilevel"):
            out[sec] = _plain(dataclasses.asdict(getattr(self, sec)))
        out["model"] = _plain(self.model.spec())
        out["data"] = _plain(self.data.spec())
        return out


def _plain(o: Any) -> Any:
    if isinstance(o, Mapping):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    return o


# --------------------------------------------------------------------------- parsing
def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(key, f"expected true/false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"expected an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"expected a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(key, f"expected a string; got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, Mapping):
            _fail(key, f"expected a table; got {value!r}")
        return _plain(value)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and inner is int and key.endswith("shape"):
            value = [value]
        if not isinstance(value, (list, tuple)):
            _fail(key, f"expected a list; got {value!r}")
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"unsupported config field type {tp!r} for {key}")  # pragma: no cover


def dataclass_from_table(cls, table: Any, name: str):
    """Build the frozen dataclass ``cls`` from a TOML table, checking every key and value type.

    The one table-to-dataclass mechanism: the run sections below and every other config (e.g. a
    study's settings) use it. Unknown keys and wrong types raise :class:`ConfigError` naming
    ``name.key``; missing keys take the dataclass defaults.
    """
    if not isinstance(table, Mapping):
        _fail(name, f"expected a table; got {table!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if cls in (ModelConfig, DataConfig):  # type + free parameters
        table = dict(table)
        kind = table.pop("type", cls().type)
        if not isinstance(kind, str):
            _fail(f"{name}.type", f"expected a string; got {kind!r}")
        return cls(type=kind, params=_plain(table))
    unknown = sorted(set(table) - set(names))
    if unknown:
        _fail(f"{name}.{unknown[0]}", f"unknown key (known keys: {', '.join(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{name}.{k}") for k, v in table.items()}
    return cls(**kwargs)


_SECTIONS = {"grid": GridConfig, "sde": SDEConfig, "model": ModelConfig, "data": DataConfig,
             "training": TrainingConfig, "multilevel": MultilevelConfig}


def config_from_dict(d: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain nested data (e.g. parsed TOML)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config must be a table; got {type(d).__name__}")
    unknown = sorted(set(d) - set(_SECTIONS) - {"name"})
    if unknown:
        _fail(unknown[0], f"unknown key (known: name, {', '.join(_SECTIONS)})")
    kwargs: dict[str, Any] = {}
    if "name" in d:
        kwargs["name"] = _coerce(d["name"], str, "name")
    for sec, cls in _SECTIONS.items():
        if sec in d:
            kwargs[sec] = dataclass_from_table(cls, d[sec], sec)
    return RunConfig(**kwargs)


def _parse_literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def apply_overrides(d: Mapping[str, Any], overrides: Sequence[str]) -> dict:
    """Return a copy of ``d`` with ``"a.b.c=value"`` overrides applied (value as a TOML literal)."""
    out = _plain(d)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, text = item.split("=", 1)
        keys = [k.strip() for k in path.strip().split(".")]
        if not all(keys):
            raise ConfigError(f"override {item!r} has an empty key")
        node = out
        for i, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(keys[:i + 1])}: is not a table, cannot override {path.strip()}")
            node = nxt
        node[keys[-1]] = _parse_literal(text)
    return out


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a TOML run file (``None``: all defaults), apply overrides, validate.

    Raises :class:`ConfigError` (a ``ValueError``) naming the file and key on any problem.
    """
    d: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            with open(p, "rb") as f:
                d = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from None
    d = apply_overrides(d, overrides)
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
