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
