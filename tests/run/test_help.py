"""Every option the README's table of names lists is in its script's --help (README "Recipes": "Names you can
type"): the rows sample.py, evaluate.py and export.py belong to those scripts, every other row to train.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache

import pytest
import yaml
from conftest import ROOT

SCRIPTS = ("train.py", "sample.py", "evaluate.py", "export.py")


def readme_options() -> dict[str, list[str]]:
    """The backticked names of the README's options table, by the script whose --help must list them."""
    text = (ROOT / "README.md").read_text()
    table = text.split("Names you can type", 1)[1].split("\n\n", 2)[1]
    options: dict[str, list[str]] = {script: [] for script in SCRIPTS}
    for row in table.splitlines()[2:]:
        label, cell = (part.strip() for part in row.strip().strip("|").split("|", 1))
        script = label if label in SCRIPTS else "train.py"
        options[script] += [span.replace("\\|", "|") for span in re.findall(r"`([^`]+)`", cell)]
    return options


@cache
def help_texts() -> dict[str, str]:
    """`python <script> --help` of every script, run side by side (each imports torch and Lightning)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = {
        script: subprocess.Popen(
            [sys.executable, str(ROOT / script), "--help"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in SCRIPTS
    }
    texts = {}
    for script, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        texts[script] = out
    return texts


def searchable(help_text: str) -> str:
    """The help text plus, for Hydra's YAML dump of the config (train.py), every key as a dotted name."""
    if "== Config ==" not in help_text:
        return help_text
    dump = help_text.split("== Config ==", 1)[1].split("\n", 2)[2]
    dump = dump.split("\n\n\n", 1)[0]
    dotted: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                name = f"{prefix}.{key}" if prefix else str(key)
                dotted.append(name)
                walk(value, name)

    walk(yaml.safe_load(dump), "")
    return help_text + "\n" + "\n".join(dotted)


def missing_from(option: str, text: str) -> list[str]:
    """The parts of one README option (`key`, `key=<a|b>`, `key=value`) that `text` does not contain; `<name>`
    inside a key stands for any name, and an all-capitals choice (N) for a number."""
    key, _, value = option.partition("=")
    key = key.rstrip("…")
    pattern = re.escape(key).replace(re.escape("<name>"), r"\w+")
    missing = [] if re.search(rf"(?<![\w.]){pattern}(?![\w])", text) else [key]
    choices = value[1:-1].split("|") if value.startswith("<") else ([value] if value else [])
    return missing + [f"{key}={c}" for c in choices if not c.isupper() and c not in text]


def test_readme_table_is_read() -> None:
    options = readme_options()
    assert "prompt" in options["sample.py"] and "guidance" in options["evaluate.py"]
    assert any(o.startswith("experiment=") for o in options["train.py"])
    assert "format=<diffusers|safetensors>" in options["export.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_readme_option_is_in_help(script: str) -> None:
    text = searchable(help_texts()[script])
    missing = [part for option in readme_options()[script] for part in missing_from(option, text)]
    assert not missing, f"{script} --help lacks {missing}"
