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


# --- the documentation site's generated pages (docs/_ext/fsdiff_pages.py; `make docs` builds the site) ---

def _pages(monkeypatch, tmp_path, repo=REPO_ROOT):
    import pytest

    pytest.importorskip("sphinx")       # the `docs` extra
    pytest.importorskip("nbformat")
    spec = importlib.util.spec_from_file_location("fsdiff_pages", REPO_ROOT / "docs" / "_ext" / "fsdiff_pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    monkeypatch.setattr(pages, "REPO", repo)
    monkeypatch.setattr(pages, "GEN", tmp_path / "_generated")
    return pages


def test_gallery_follows_the_notebooks_folder(monkeypatch, tmp_path):
    import base64

    import nbformat

    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    png = base64.b64encode(b"\x89PNG fake").decode()
    untitled = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Some text, no heading."),
        nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("display_data", data={"image/png": png})])])
    titled = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 2. A title\n\nWhat it shows.")])
    nbformat.write(untitled, repo / "notebooks" / "01_untitled.ipynb")
    nbformat.write(titled, repo / "notebooks" / "02_titled.ipynb")
    pages = _pages(monkeypatch, tmp_path, repo)

    pages.stage_notebooks()
    gen = tmp_path / "_generated"
    staged = nbformat.read(gen / "notebooks" / "01_untitled.ipynb", as_version=4)
    assert staged.cells[0].source == "# 01 untitled"          # a page without a title gets one
    assert (gen / "notebooks" / "thumbs" / "01_untitled.png").read_bytes() == b"\x89PNG fake"
    gallery = (gen / "gallery.md.txt").read_text()
    assert "[2. A title](_generated/notebooks/02_titled.ipynb)" in gallery and "What it shows." in gallery

    (repo / "notebooks" / "01_untitled.ipynb").unlink()       # a removed notebook leaves the site
    pages.stage_notebooks()
    assert not (gen / "notebooks" / "01_untitled.ipynb").exists()
    assert not (gen / "notebooks" / "thumbs" / "01_untitled.png").exists()
    assert "01_untitled" not in (gen / "gallery.md.txt").read_text()


def test_api_pages_document_every_exported_name_once(monkeypatch, tmp_path):
    import re

    pages = _pages(monkeypatch, tmp_path)
    pages.stage_api()
    documented = []
    for name in pages.PACKAGES:
        text = (tmp_path / "_generated" / "api" / f"{name}.md").read_text()
        mod = importlib.import_module(name)
        rows = re.findall(r"^   \* - :py:obj:`~?([\w.]+)`", text, re.M)
        assert [r.rsplit(".", 1)[-1] for r in rows] == list(mod.__all__)
        documented += [f"{name}.{n}" for n in re.findall(r"^\.\. (?:autoclass|autofunction|py:data):: (\w+)", text, re.M)]
        documented += re.findall(r"^\.\. automodule:: ([\w.]+)\n   :members:", text, re.M)
    objects = {}
    for full in documented:
        mod, _, attr = full.rpartition(".")
        obj = getattr(importlib.import_module(mod), attr) if mod else importlib.import_module(full)
        assert id(obj) not in objects, f"{full} is also documented as {objects[id(obj)]}"
        objects[id(obj)] = full
    exported = {id(getattr(importlib.import_module(p), n)) for p in pages.PACKAGES for n in importlib.import_module(p).__all__}
    assert exported <= set(objects)


def test_every_study_figure_is_on_a_page(monkeypatch, tmp_path):
    import re

    pages = _pages(monkeypatch, tmp_path)
    pages.stage_studies()
    out = tmp_path / "_generated" / "resolution_studies"
    shown = set()
    for page in out.rglob("*.md"):
        shown |= {(page.parent / m).resolve() for m in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text())}
    pngs = {(out / p.relative_to(REPO_ROOT / "resolution_studies")).resolve()
            for p in (REPO_ROOT / "resolution_studies" / "results").rglob("*.png")}
    assert pngs and pngs <= shown
    assert all(p.exists() for p in shown)
