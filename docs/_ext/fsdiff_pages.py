"""Write the generated pages of the documentation site into ``docs/_generated/`` before Sphinx reads.

Sphinx only reads sources under ``docs/``; the notebooks, the resolution studies and the command
line live elsewhere and change while people work. On every build (``config-inited``) this
extension stages them:

* ``_generated/notebooks/*.ipynb``: copies of ``notebooks/*.ipynb`` (a glob, so a new notebook is
  picked up and a removed one disappears), rendered by myst-nb from their committed outputs;
  ``_generated/gallery.md.txt``: one entry per notebook (title, first paragraph, first figure);
* ``_generated/resolution_studies/``: ``resolution_studies/README.md`` and every ``summary.md`` /
  ``README.md`` and PNG under ``results/``, in the same layout so the README's relative links and
  images keep working; PNGs a summary does not show are appended to it under "Figures";
* ``_generated/api/<package>.md``: one autodoc page per public package from its ``__all__``;
* ``_generated/cli.md.txt``: the help of ``fsdiff`` and of each subcommand, from
  ``fsdiff.app.cli.build_parser()``.

Files are rewritten only when their content changes, so Sphinx's incremental build stays
incremental. The ``.txt`` fragments are included by hand-written pages and are not documents.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import inspect
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer

DOCS = Path(__file__).resolve().parents[1]
REPO = DOCS.parent
GEN = DOCS / "_generated"

#: the public packages, in the order of the API reference
PACKAGES = ("fsdiff", "fsdiff.models", "fsdiff.sampling", "fsdiff.training", "fsdiff.data", "fsdiff.eval",
            "fsdiff.points", "fsdiff.sno", "fsdiff.conditional")


def write_if_changed(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def prune(folder: Path, keep: set[Path]) -> None:
    """Remove staged files that no longer have a source (a deleted notebook or study)."""
    if not folder.exists():
        return
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file() and p not in keep:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


# --- notebooks ---------------------------------------------------------------------------------

def _title_and_blurb(nb, fallback: str) -> tuple[str, str, bool]:
    """The notebook's first ``# `` heading, the paragraph after it, and whether it had a heading."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# "):
                rest = "\n".join(lines[i + 1:]).strip().split("\n\n")[0]
                return line[2:].strip(), " ".join(rest.split()), True
        break
    return fallback, "", False


def _first_png(nb) -> bytes | None:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                return base64.b64decode(png if isinstance(png, str) else "".join(png))
    return None


def stage_notebooks() -> None:
    src = REPO / "notebooks"
    out = GEN / "notebooks"
    keep: set[Path] = set()
    entries = []
    for path in sorted(src.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        title, blurb, has_title = _title_and_blurb(nb, path.stem.replace("_", " "))
        if not has_title:       # a page needs a title to appear in the gallery's table of contents
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}"))
        dst = out / path.name
        write_if_changed(dst, nbformat.writes(nb) + "\n")
        keep.add(dst)
        thumb = _first_png(nb)
        if thumb is not None:
            keep.add(out / "thumbs" / f"{path.stem}.png")
            write_if_changed(out / "thumbs" / f"{path.stem}.png", thumb)
        entries.append((path, title, blurb, thumb is not None))
    prune(out, keep)

    lines = []
    for path, title, blurb, thumb in entries:
        lines += [f"## [{title}](_generated/notebooks/{path.name})", ""]
        if thumb:
            lines += [f"```{{image}} /_generated/notebooks/thumbs/{path.stem}.png",
                      f":alt: first figure of {path.name}", ":width: 360px",
                      f":target: _generated/notebooks/{path.stem}.html", "```", ""]
        if blurb:
            lines += [blurb, ""]
        lines += [f"Source: `notebooks/{path.name}`", ""]
    if not entries:
        lines += ["No notebooks yet.", ""]
    lines += ["```{toctree}", ":hidden:", ":glob:", "", "_generated/notebooks/*", "```", ""]
    write_if_changed(GEN / "gallery.md.txt", "\n".join(lines))


# --- resolution studies ------------------------------------------------------------------------

IMAGE = re.compile(r"!\[[^\]]*\]\(\s*([^)\s]+)")


def stage_studies() -> None:
    src = REPO / "resolution_studies"
    out = GEN / "resolution_studies"
    keep: set[Path] = set()

    pages = sorted(p for p in (src / "results").rglob("*.md") if p.name in ("summary.md", "README.md"))
    for png in sorted((src / "results").rglob("*.png")):
        dst = out / png.relative_to(src)
        if not dst.exists() or dst.stat().st_size != png.stat().st_size or dst.read_bytes() != png.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, dst)
        keep.add(dst)
    folders = {page.parent for page in pages}

    def owner(png: Path) -> Path | None:
        """The nearest folder at or above the PNG that has a summary page."""
        for folder in (png.parent, *png.parents):
            if folder in folders:
                return folder
        return None

    for page in pages:
        text = page.read_text()
        shown = {(page.parent / m).resolve() for m in IMAGE.findall(text)}
        rest = [p for p in sorted(page.parent.rglob("*.png")) if p.resolve() not in shown and owner(p) == page.parent]
        if rest:
            text = text.rstrip() + "\n\n## Figures\n\n" + "\n\n".join(
                f"`{p.relative_to(page.parent).as_posix()}`\n\n"
                f"![{p.relative_to(page.parent).with_suffix('').as_posix()}]({p.relative_to(page.parent).as_posix()})"
                for p in rest) + "\n"
        dst = out / page.relative_to(src)
        write_if_changed(dst, text)
        keep.add(dst)

    readme = (src / "README.md").read_text().rstrip()
    readme += "\n\n```{toctree}\n:hidden:\n\n" + "\n".join(
        p.relative_to(src).with_suffix("").as_posix() for p in pages) + "\n```\n"
    write_if_changed(out / "README.md", readme)
    keep.add(out / "README.md")
    prune(out, keep)


# --- API reference -----------------------------------------------------------------------------

def _home(obj, exporters: list[str]) -> str:
    """The package an object is documented under: the exporter its ``__module__`` lies in, deepest first."""
    mod = getattr(obj, "__module__", None) or ""
    if inspect.ismodule(obj):
        mod = obj.__name__
    inside = [p for p in exporters if mod == p or mod.startswith(p + ".")]
    return max(inside, key=len) if inside else exporters[0]


def _summary(package: str, name: str, obj) -> str:
    """The first line of the docstring (as ``docs/api.md`` has it) or of a constant's ``#:`` comment."""
    if inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj):
        doc = (inspect.getdoc(obj) or "").strip().splitlines()
    else:
        doc = [line for line in _constant_doc(package, name, obj) if line.strip()]
    return doc[0] if doc else ""


def _constant_doc(package: str, name: str, obj) -> list[str]:
    """The ``#:`` comment of a constant where it is assigned (a package only re-exports it).

    autodoc would look for the comment in the package itself and otherwise show the docstring of
    the value's type (``dict``'s, ``Grid``'s), so the comment is read here.
    """
    for modname, mod in sorted(sys.modules.items()):
        if mod is None or not (modname == package or modname.startswith(package + ".")):
            continue
        if vars(mod).get(name) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except PycodeError:
            continue
        if ("", name) in docs:
            return list(docs[("", name)])
    return []


def stage_api() -> None:
    mods = {name: importlib.import_module(name) for name in PACKAGES}
    exporters: dict[int, list[str]] = {}
    for name, mod in mods.items():
        for n in mod.__all__:
            exporters.setdefault(id(getattr(mod, n)), []).append(name)

    out = GEN / "api"
    keep: set[Path] = set()
    for name, mod in mods.items():
        own, rows = [], []
        for n in mod.__all__:
            obj = getattr(mod, n)
            home = _home(obj, exporters[id(obj)])
            if home == name:
                own.append((n, obj))
                rows.append((f":py:obj:`{n}`", _summary(name, n, obj)))
            else:
                rows.append((f":py:obj:`~{home}.{n}`", f"documented in :py:mod:`{home}`"))
        lines = [f"# `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "",
                 f".. currentmodule:: {name}", "", ".. list-table::", "   :widths: 30 70", "   :header-rows: 1", "",
                 "   * - name", "     - what it is"]
        for ref, what in rows:
            lines += [f"   * - {ref}", f"     - {what}"]
        lines.append("")
        for n, obj in own:
            if inspect.ismodule(obj):
                lines += [f".. rubric:: ``{n}``", "", f".. automodule:: {obj.__name__}", "   :members:", "",
                          f".. currentmodule:: {name}", ""]
            elif inspect.isclass(obj):
                bases = [c for c in obj.__bases__ if c is not object]
                lines += [f".. autoclass:: {n}", "   :members:"] + (["   :show-inheritance:"] if bases else []) + [""]
            elif callable(obj):
                lines += [f".. autofunction:: {n}", ""]
            else:
                value = repr(obj)
                lines += [f".. py:data:: {n}"] + ([f"   :value: {value}"] if len(value) <= 200 else [])
                lines += [""] + [f"   {line}" for line in _constant_doc(name, n, obj)] + [""]
        lines += ["```", ""]
        dst = out / f"{name}.md"
        write_if_changed(dst, "\n".join(lines))
        keep.add(dst)
    prune(out, keep)


# --- command line ------------------------------------------------------------------------------

def stage_cli() -> None:
    from fsdiff.app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"          # argparse wraps to the terminal width: fixed, to fit the page
    try:
        lines = ["| command | what it does |", "|---|---|"]
        lines += [f"| [`fsdiff {n}`](#fsdiff-{n}) | {helps.get(n, '')} |" for n in sub.choices]
        lines += ["", "```text", parser.format_help().rstrip(), "```", ""]
        for n, p in sub.choices.items():
            lines += [f"(fsdiff-{n})=", f"### `fsdiff {n}`", "", "```text", p.format_help().rstrip(), "```", ""]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    write_if_changed(GEN / "cli.md.txt", "\n".join(lines))


def stage(app=None, config=None) -> None:
    GEN.mkdir(exist_ok=True)
    stage_notebooks()
    stage_studies()
    stage_api()
    stage_cli()


def setup(app):
    app.connect("config-inited", stage)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
