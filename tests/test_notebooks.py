"""Every notebook in notebooks/ is committed with its figures (so a code host shows them) and still runs top to
bottom, drawing them again (notebooks/execute.py refreshes the committed outputs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))

# Injected as the first cell: report which interpreter the kernel runs, so a kernelspec pointing at another
# Python (one without difflab installed) fails with a clear message instead of an ImportError deep inside.
PROBE = "import json, sys\nprint(json.dumps({'executable': sys.executable, 'prefix': sys.prefix}))"


def test_notebooks_exist() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOKS_DIR}"


def has_png(output) -> bool:
    return output.output_type in ("display_data", "execute_result") and "image/png" in output.get("data", {})


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert_figures_shown(nb, f"committed {path.name} (refresh with notebooks/execute.py)")
    committed = figures_per_cell(nb)

    # The kernel inherits this environment: an MPLBACKEND such as Agg (common in CI) would override
    # ipykernel's inline backend and the figures would never reach the notebook.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    # jupyter_client replaces the "python" of the python3 kernelspec with sys.executable; the probe checks it.
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)

    probe_text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    kernel = json.loads(probe_text)
    assert kernel["prefix"] == sys.prefix, (
        f"{path.name} ran on the wrong Python: kernel {kernel['executable']} (prefix {kernel['prefix']}), "
        f"tests {sys.executable} (prefix {sys.prefix}); check `jupyter kernelspec list` for a stray python3"
    )

    assert_figures_shown(nb, path.name)
    # Fresh: the committed copy shows the figures this code draws now, cell for cell.
    assert figures_per_cell(nb)[1:] == committed, (
        f"{path.name}: committed figures {committed} differ from a fresh run's; refresh with notebooks/execute.py"
    )


def figures_per_cell(nb) -> list[int]:
    """How many image/png outputs each code cell has."""
    return [sum(map(has_png, cell.outputs)) for cell in nb.cells if cell.cell_type == "code"]


def assert_figures_shown(nb, name: str) -> None:
    """No error output, and every code cell that calls plt.show() carries an image/png output."""
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    outputs = [o for cell in code_cells for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{name} produced errors: {[(o.ename, o.evalue) for o in errors]}"
    assert any(map(has_png, outputs)), (
        f"{name} shows no image/png figure (is MPLBACKEND a non-inline backend?)"
    )
    blank = [i for i, cell in enumerate(code_cells) if "plt.show()" in cell.source]
    blank = [i for i in blank if not any(map(has_png, code_cells[i].outputs))]
    assert not blank, f"{name}: code cells #{blank} (0-based) call plt.show() but show no image/png"
