"""Run every notebook top to bottom and save it with its outputs, so its figures show on a code host.

.venv/bin/python notebooks/execute.py            # all notebooks
.venv/bin/python notebooks/execute.py 03_conditioning.ipynb    # one, by name or path (notebooks/03_conditioning.ipynb)

Paths of the machine that ran it (the repository, the Python environment, the temporary folder, the home folder)
are replaced in the stored outputs by <repo>, <python>, <tmp> and ~.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def machine_paths() -> list[tuple[str, str]]:
    """(path, what stands for it) for this machine's places an output may print, the longest first (a venv
    inside the repository is <python>, not <repo>/.venv)."""
    places = {
        str(HERE.parent): "<repo>",
        sys.prefix: "<python>",
        sys.base_prefix: "<python>",
        str(Path(tempfile.gettempdir()).resolve()): "<tmp>",
        tempfile.gettempdir(): "<tmp>",
        str(Path.home()): "~",
    }
    return sorted(places.items(), key=lambda item: -len(item[0]))


def scrub_paths(nb: nbformat.NotebookNode) -> None:
    """Replace this machine's paths in every text output of `nb` (streams, plain-text results, errors)."""

    def scrub(text: str) -> str:
        for path, stand_in in machine_paths():
            # Whole path components only: /root is ~, /rootfs stays.
            text = re.sub(re.escape(path) + r"(?![\w.-])", lambda _: stand_in, text)
        return text

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = scrub(output["text"])
            if "text/plain" in output.get("data", {}):
                output["data"]["text/plain"] = scrub(output["data"]["text/plain"])
            if "traceback" in output:
                output["traceback"] = [scrub(line) for line in output["traceback"]]


def execute(path: Path) -> float:
    """Execute the notebook in place (in its own folder); returns the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=1800, resources={"metadata": {"path": str(HERE)}}
    ).execute()
    scrub_paths(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def resolve_notebook(given: str) -> Path:
    """The notebook a command-line argument names: a path (from here or the repository), or a name in notebooks/.
    ValueError naming the notebooks there when it is none of them."""
    for candidate in (Path(given), HERE.parent / given, HERE / given, HERE / f"{given}.ipynb"):
        if candidate.is_file() and candidate.suffix == ".ipynb":
            return candidate.resolve()
    known = ", ".join(p.name for p in sorted(HERE.glob("*.ipynb")))
    raise ValueError(f"no notebook {given}: give one of {known} (or none, for all)")


def main(args: list[str]) -> None:
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    try:
        paths = [resolve_notebook(a) for a in args] or sorted(HERE.glob("*.ipynb"))
    except ValueError as error:  # before, a FileNotFoundError traceback once nbformat opened it
        sys.exit(f"error: {error}")
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
