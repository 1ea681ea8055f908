"""Every notebook in notebooks/ is committed with its figures (so a code host shows them) and still runs top to
bottom, drawing them again (notebooks/execute.py refreshes the committed outputs); the numbers its text quotes
are the ones its outputs show, and no output holds a path of the machine that ran it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbclient
import nbformat
import pytest
from conftest import ROOT, compose_config

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
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert_figures_shown(nb, f"committed {path.name} (refresh with notebooks/execute.py)")
    committed = figures_per_cell(nb)

    # The kernel inherits this environment: an MPLBACKEND such as Agg (common in CI) would override
    # ipykernel's inline backend and the figures would never reach the notebook.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # The notebooks train into tempfile.mkdtemp() folders and keep them for the reader; under pytest's tmp_path
    # they are pruned with it instead of piling up in /tmp on every test run.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
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
    assert_claims_hold(nb, path.name)
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


# --- numbers in the text --------------------------------------------------------------------------------------


@dataclass
class Claim:
    """A number the markdown states (`text`'s groups) and what the outputs show for it (`shown`'s groups, every
    match), with `holds(said, shown)` saying whether they agree."""

    text: str
    shown: str
    holds: Callable[[tuple[str, ...], list[tuple[str, ...]]], bool]


def _int(value: str) -> int:
    return int(value.replace(",", ""))


CLAIMS = {
    "01_forward_process.ipynb": [
        Claim(r"resized to (\d+)×\d+", r"torch\.Size\(\[\d+, 1, (\d+), \d+\]\)", lambda s, o: o == [s]),
        # Linear: ᾱ < 0.01 (near-pure noise) over about the last third of T = 1000 steps.
        Claim(
            r"roughly the (last third) of the steps",
            r"linear +ᾱ<0\.5 from t= *\d+ +ᾱ<0\.01 from t=(\d+)",
            lambda s, o: abs((1000 - _int(o[0][0])) / 1000 - 1 / 3) < 0.05,
        ),
    ],
    "02_sampling_and_editing.ipynb": [
        Claim(r"~(\d+)k parameters", r"UNet with ([\d,]+) parameters", lambda s, o: round(_int(o[0][0]) / 1e3) == _int(s[0])),
        Claim(r"(\d+) optimizer steps", r"trained (\d+) steps", lambda s, o: o == [s]),
        Claim(r"DDPM \((\d+) steps\), DDIM \((\d+)\), DPM-Solver\+\+ \((\d+)\)", r"(?:DDPM|DDIM|DPM-Solver\+\+)-\d+ +(\d+)",
              lambda s, o: [x for (x,) in o[:3]] == list(s)),  # fmt: skip
        Claim(r"Heun \(\d+ steps, (\d+) network evaluations\)", r"Heun-\d+ +(\d+)", lambda s, o: o == [s]),
        Claim(r"NFE = 2·(\d+) − 1 = (\d+)", r"Heun-(\d+) +(\d+)", lambda s, o: o == [s]),
        Claim(r"(\d+)–(\d+)× cheaper", r"DDPM-\d+ +(\d+).*\n *DDIM-\d+ +(\d+).*\n *DPM-Solver\+\+-\d+ +(\d+)",
              lambda s, o: (_int(o[0][0]) // _int(o[0][1]), _int(o[0][0]) // _int(o[0][2])) == tuple(map(_int, s))),  # fmt: skip
        Claim(r"a (few hundred) network calls per image", r"RePaint .*: (\d+) network calls", lambda s, o: 100 <= _int(o[0][0]) < 1000),
        Claim(r"paper's\s+setting \((\d+) steps, `jump_length=(\d+)`, `jump_n_sample=(\d+)`\)",
              r"paper's steps=(\d+), jump_length=(\d+), jump_n_sample=(\d+)", lambda s, o: o == [s]),  # fmt: skip
        Claim(r"only about (\d+)% of the signal amplitude is\s+left at \$t=(\d+)\$", r"starts at t=(\d+) \(signal kept √ᾱ=([\d.]+)\)",
              lambda s, o: round(100 * float(dict(o)[s[1]])) == _int(s[0])),  # fmt: skip
    ],
    "03_conditioning.ipynb": [
        Claim(r"each trained here for a (few hundred) CPU steps", r"classes: (\d+) steps", lambda s, o: 100 <= _int(o[0][0]) < 1000),
    ],
}  # fmt: skip


def markdown_and_outputs(nb) -> tuple[str, str]:
    """The notebook's markdown and the text of its outputs (streams and plain-text results)."""
    markdown = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    return markdown, "\n".join(output_texts(nb))


def output_texts(nb) -> list[str]:
    return [
        output.get("text", "") + output.get("data", {}).get("text/plain", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]


def assert_claims_hold(nb, name: str) -> None:
    """Each claim of CLAIMS[name] appears in the text (every time it does) and agrees with the outputs."""
    markdown, outputs = markdown_and_outputs(nb)
    for claim in CLAIMS.get(name, []):
        said = re.findall(claim.text, markdown)
        shown = [m if isinstance(m, tuple) else (m,) for m in re.findall(claim.shown, outputs)]
        assert said, f"{name}: the text no longer says {claim.text!r} (update CLAIMS)"
        assert shown, f"{name}: the outputs no longer show {claim.shown!r}"
        for one in said:
            one = one if isinstance(one, tuple) else (one,)
            assert claim.holds(one, shown), f"{name}: the text says {one}, the outputs show {shown}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_text_quotes_the_committed_outputs(path: Path) -> None:
    assert_claims_hold(nbformat.read(path, as_version=4), path.name)


# An absolute path in an output: "/x/y…" not inside a word, a relative path, a URL or a placeholder (<tmp>/…).
ABSOLUTE_PATH = re.compile(r"(?<![\w.<>~/:])/(?:[\w.+-]+/)+[\w.+-]*")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_outputs_hold_no_machine_paths(path: Path) -> None:
    found = [
        m for text in output_texts(nbformat.read(path, as_version=4)) for m in ABSOLUTE_PATH.findall(text)
    ]
    assert not found, f"{path.name} outputs hold paths of the machine that ran them: {found}"


def test_execute_py_stores_no_machine_paths() -> None:
    sys.path.insert(0, str(NOTEBOOKS_DIR))
    from execute import scrub_paths

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('x')")])
    texts = [f"{sys.prefix}/lib/python3/site-packages/tqdm/auto.py:21: TqdmWarning",
             f"repository: {ROOT}", f"run folder {tempfile.gettempdir()}/difflab_nb02_abc/run"]  # fmt: skip
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in texts]
    nb.cells[0].outputs.append(
        nbformat.v4.new_output("execute_result", data={"text/plain": f"'{ROOT}/conf'"})
    )
    scrub_paths(nb)
    kept = output_texts(nb)
    assert not [m for text in kept for m in ABSOLUTE_PATH.findall(text)], kept
    assert "run folder <tmp>/difflab_nb02_abc/run" in kept  # what the path was stays readable


# --- run times the notebooks, the recipe and the README quote -----------------------------------------------------


def test_the_default_runs_time_is_the_same_everywhere(tmp_path: Path) -> None:
    """make train's wall time as the README measured it, and the same recipe wherever it is described."""
    readme = (ROOT / "README.md").read_text()
    minutes, seconds = map(int, re.search(r"(\d+) min (\d+) s of wall time", readme).groups())
    measured = minutes + seconds / 60
    default = re.search(r"train\.py experiment=(\w+)", (ROOT / "Makefile").read_text())[
        1
    ]  # make train's recipe
    assert f"`make train` is `python train.py experiment={default}`" in readme
    recipe = (ROOT / "conf" / "experiment" / f"{default}.yaml").read_text()
    notebook = "\n".join(
        c.source for c in nbformat.read(NOTEBOOKS_DIR / "02_sampling_and_editing.ipynb", as_version=4).cells
    )
    quoted = {
        f"{default}.yaml": re.search(r"on a CPU in about ([\d.]+) minutes", recipe),
        "notebook 02": re.search(r"about ([\d.]+) minutes", notebook),
    }
    for where, match in quoted.items():
        assert match, f"{where} no longer quotes make train's run time"
        assert abs(float(match.group(1)) - measured) <= 0.5, (
            f"{where} says {match.group(1)} min, README {measured:.2f}"
        )
    cfg = compose_config("train", [f"experiment={default}"], tmp_path)
    channels, steps = re.search(r"`unet_small` at (\d+) channels for ([\d,]+) steps", notebook).groups()
    assert (cfg.model.base_channels, cfg.trainer.max_steps) == (_int(channels), _int(steps))


def test_execute_py_takes_a_name_or_a_path_and_names_the_notebooks_otherwise() -> None:
    # Before, --help and notebooks/03_conditioning.ipynb ended in a FileNotFoundError traceback.
    sys.path.insert(0, str(NOTEBOOKS_DIR))
    from execute import resolve_notebook

    wanted = NOTEBOOKS_DIR / "03_conditioning.ipynb"
    for given in ("03_conditioning.ipynb", "notebooks/03_conditioning.ipynb", str(wanted), "03_conditioning"):
        assert resolve_notebook(given) == wanted
    script = [sys.executable, str(NOTEBOOKS_DIR / "execute.py")]
    shown = subprocess.run([*script, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert shown.returncode == 0 and "notebooks/execute.py" in shown.stdout and not shown.stderr
    refused = subprocess.run(
        [*script, "04_nothing.ipynb"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: no notebook 04_nothing.ipynb: give one of 01_forward_process.ipynb, 02_sampling_and_editing.ipynb, "
        "03_conditioning.ipynb (or none, for all)"
    )
