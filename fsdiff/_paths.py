"""Where the repository's shipped files live (configs, pretrained models): one definition."""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT", "CONFIGS_DIR", "PRETRAINED_DIR"]

#: the checkout holding this package (``configs/`` and ``pretrained/`` sit beside ``fsdiff/``)
REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
PRETRAINED_DIR = REPO_ROOT / "pretrained"
