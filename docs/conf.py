"""Sphinx configuration of the fsdiff documentation site (``make docs`` -> ``docs/_build/html``).

Markdown pages (MyST), notebooks rendered from their committed outputs (myst-nb, no execution),
the API reference from the numpy-style docstrings (autodoc + napoleon). The build needs no network.
Generated pages are staged into ``docs/_generated/`` by ``_ext/fsdiff_pages.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))          # import fsdiff from the checkout, installed or not
os.environ.setdefault("MPLBACKEND", "Agg")

import fsdiff  # noqa: E402

project = "fsdiff"
author = "the fsdiff authors"
copyright = "the fsdiff authors, MIT licence"
release = version = fsdiff.__version__

extensions = [
    "myst_nb",                 # MyST markdown + notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 served from _static, so pages render math without a network
    "fsdiff_pages",            # stages notebooks, studies, API pages and the CLI help (docs/_ext)
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# --- MyST / notebooks --------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3              # `page.md#a-heading` links work for headings down to ###
nb_execution_mode = "off"             # render the committed outputs; never run a kernel here
nb_merge_streams = True

# --- autodoc -----------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True      # show `DOUBLE_GRID`, not its repr
autodoc_class_signature = "mixed"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

# --- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"fsdiff {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_copy_source = False
