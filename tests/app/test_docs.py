"""docs/api.md lists every exported name as the docstrings say (regenerate: python tools/api_doc.py)."""

from __future__ import annotations

import importlib.util

from fsdiff._paths import REPO_ROOT


def test_api_doc_is_current():
    spec = importlib.util.spec_from_file_location("api_doc", REPO_ROOT / "tools" / "api_doc.py")
    api_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api_doc)
    assert (REPO_ROOT / "docs" / "api.md").read_text() == api_doc.render(), \
        "docs/api.md is stale: run `python tools/api_doc.py`"
