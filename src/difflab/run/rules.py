"""A config held to the rules for values a user types (difflab.value_rules), and required keys, each in one line.

Imports OmegaConf only: train.py checks the values it was given before torch or Lightning are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..value_rules import Rule, check_named


def check_values(cfg: DictConfig, rules: Mapping[str, Rule]) -> None:
    """One line naming the first key whose value breaks its rule (keys absent from cfg are skipped)."""
    given = {}
    for key in rules:
        node = OmegaConf.select(cfg, key, default=_ABSENT)
        if node is not _ABSENT:
            given[key] = node
    check_named(given, rules)


_ABSENT = object()


def require(cfg: DictConfig, key: str, message: str) -> Any:
    """cfg's value for a required key; a one-line error (`message`) when it is unset."""
    value = cfg.get(key)
    if value in (None, ""):
        raise ValueError(message)
    return value


def check_given(cfg: DictConfig) -> None:
    """One line naming the first mandatory key (`???`, e.g. data=folder's data.root) the command left out; Hydra's
    own settings are not a run's (a launcher's are checked where it starts)."""
    tree = OmegaConf.to_container(cfg, resolve=False)  # resolving would read hydra.* (unset before the job)
    missing = [key for key, value in _leaves(tree) if value == "???" and not key.startswith("hydra.")]
    if missing:
        raise ValueError(
            f"{missing[0]} must be given: add {missing[0]}=<value> to the command (the chosen config has no default)"
        )


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(node, dict):
        return [(prefix, node)]
    return [
        leaf
        for key, child in node.items()
        for leaf in _leaves(child, f"{prefix}.{key}" if prefix else str(key))
    ]
