"""Shared test configuration: thread count, the one-thread fixtures and the data directory fixtures."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Directory of the MNIST / Fashion-MNIST IDX files.

    ``$FSDIFF_DATA_DIR`` if set, else ``../shared/data`` relative to the repository root.
    Tests that need the files should skip when the directory is missing.
    """
    env = os.environ.get("FSDIFF_DATA_DIR")
    path = Path(env) if env else (REPO_ROOT.parent / "shared" / "data")
    return path.resolve()


@pytest.fixture
def gen() -> torch.Generator:
    """A fresh CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def data_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Like :func:`data_dir`, with ``$FSDIFF_DATA_DIR`` set to it for the duration of the test."""
    monkeypatch.setenv("FSDIFF_DATA_DIR", str(data_dir))
    return data_dir


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def single_thread():
    """Run a test of many small tensor ops on one thread (restored after).

    Waking the second intra-op thread costs up to a scheduler time slice (~20 ms measured here)
    per parallel op when the machine is busy; loops of small ops then run 10x slower on 2 threads.
    Whole modules use it with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    with _threads(1):
        yield


@pytest.fixture(scope="module")
def single_thread_module():
    """:func:`single_thread` for module-scoped fixtures (e.g. a small training run shared by a module)."""
    with _threads(1):
        yield
