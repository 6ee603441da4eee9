"""Teaching notebooks run end to end at small sizes (FSDIFF_NOTEBOOK_SMALL=1).

Marked ``notebooks`` and left out of ``make test`` (they take about 80 s together); ``make notebooks``
runs them, and CI runs it after the tests.
"""


import pytest

from fsdiff._paths import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("FSDIFF_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_lesson_with_stored_outputs(path):
    """A learning goal at the top, a small-size switch, exercises at the end, figures stored for readers."""
    nb = nbformat.read(path, as_version=4)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith("# ") and "**Learning goal.**" in first.source
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert 'os.environ.get("FSDIFF_NOTEBOOK_SMALL") == "1"' in code[0].source
    assert all(c.get("execution_count") for c in code if c.source.strip()), "run notebooks/execute.py to store outputs"
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)


def test_the_notebooks_readme_lists_every_notebook():
    listed = (REPO_ROOT / "notebooks" / "README.md").read_text()
    assert all(f"({p.name})" in listed for p in NOTEBOOKS) and len(NOTEBOOKS) >= 8
