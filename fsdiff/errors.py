"""The errors fsdiff raises for expected failures: one hierarchy under :class:`FsdiffError`.

Each class also derives from the built-in exception callers would catch anyway (``ValueError``,
``OSError``, ...), so ``except ValueError`` keeps working. The ``fsdiff`` command prints any
:class:`FsdiffError` as one or two lines and exits with status 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

__all__ = ["FsdiffError", "ConfigError", "DataError", "CheckpointError", "GridError", "TrainingDiverged",
           "OutputError", "RunDirectoryError"]


class FsdiffError(Exception):
    """Base of every expected failure: bad input, unusable files, a diverged run, an unwritable output."""


class ConfigError(FsdiffError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range; the message names the key."""


class DataError(FsdiffError, ValueError):
    """A data set cannot be read or does not have the expected shape or content."""


class CheckpointError(FsdiffError, ValueError):
    """A file is not a readable fsdiff checkpoint, or does not fit the model it is loaded into."""


class GridError(FsdiffError, ValueError):
    """A grid is malformed (non-integer sizes, bad lengths) or does not match a tensor."""


class TrainingDiverged(FsdiffError, FloatingPointError):
    """The loss or gradient became non-finite; the message names the step and the last good checkpoint."""


class OutputError(FsdiffError, OSError):
    """An output file cannot be written (disk full, read-only, not a directory); names the file."""


class RunDirectoryError(FsdiffError, FileExistsError):
    """A run directory is in use by another process, or holds a run that was not asked to resume."""
