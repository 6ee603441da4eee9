"""Execute the teaching notebooks in place at full size, so their outputs are stored for readers.

Usage: ``.venv/bin/python notebooks/execute.py [NAME.ipynb ...]``
"""

import sys
import time
from pathlib import Path

import nbclient
import nbformat

here = Path(__file__).parent
paths = [here / p for p in sys.argv[1:]] or sorted(here.glob("*.ipynb"))
for path in paths:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):  # nbformat 4.5 wants cell ids; stable ones keep diffs small
        cell.setdefault("id", f"{path.stem[:2]}-{i:03d}")
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
    nbformat.write(nb, path)
    print(f"executed {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
