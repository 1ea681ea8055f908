"""Run every notebook top to bottom and save it with its outputs, so its figures show on a code host.

.venv/bin/python notebooks/execute.py            # all notebooks
.venv/bin/python notebooks/execute.py 03_conditioning.ipynb
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> float:
    """Execute the notebook in place (in its own folder); returns the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=1800, resources={"metadata": {"path": str(HERE)}}
    ).execute()
    nbformat.write(nb, path)
    return time.perf_counter() - start


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.name for p in HERE.glob("*.ipynb"))
    for name in names:
        print(f"{name}: {execute(HERE / name):.0f} s", flush=True)
