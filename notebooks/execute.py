"""Execute the teaching notebooks in place at full size, so their outputs are stored for readers.

Usage: ``.venv/bin/python notebooks/execute.py [NAME.ipynb ...]``
"""

import sys
from pathlib import Path

import nbclient
import nbformat

here = Path(__file__).parent
paths = [here / p for p in sys.argv[1:]] or sorted(here.glob("*.ipynb"))
for path in paths:
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
    nbformat.write(nb, path)
    print("executed", path.name)
