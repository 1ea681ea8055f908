"""Function names keep the verb meanings written in difflab's package docstring (check / require / refuse /
resolve), so a caller can tell from a name whether a value comes back."""

from __future__ import annotations

import ast

from conftest import ROOT

SRC = ROOT / "src" / "difflab"


def _functions() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                found.append((f"{path.relative_to(SRC)}:{node.name}", node))
    return found


def _returns_none(node: ast.FunctionDef) -> bool:
    return isinstance(node.returns, ast.Constant) and node.returns.value is None


def test_check_and_refuse_return_nothing_require_and_resolve_return_a_value():
    functions = _functions()
    assert len(functions) > 100  # the walk found the package
    wrong = []
    for where, node in functions:
        verb = node.name.split("_")[0]
        if verb in ("check", "refuse") and not _returns_none(node):
            wrong.append(f"{where} ({verb}_* returns None)")
        if verb in ("require", "resolve") and (node.returns is None or _returns_none(node)):
            wrong.append(f"{where} ({verb}_* returns the value)")
    assert not wrong, "names that break the verb meanings of difflab/__init__.py: " + "; ".join(wrong)
