"""Rules for values a user types, and the check that names the first key breaking its rule in one line.

Imports OmegaConf only: train.py checks the values it was given before torch or Lightning are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

Rule = Callable[[Any], str | None]  # a value -> what is wrong with it (None when it is fine)


def whole(minimum: int, nullable: bool = False) -> Rule:
    """A whole number >= minimum (None allowed when nullable)."""

    def rule(value: Any) -> str | None:
        if value is None:
            return None if nullable else "must be set"
        if isinstance(value, bool) or not isinstance(value, int):
            return "is not a whole number"
        return None if value >= minimum else f"must be at least {minimum}"

    return rule


def number(minimum: float, above: bool = False, nullable: bool = False) -> Rule:
    """A finite number >= minimum (> minimum when `above`; None allowed when nullable)."""

    def rule(value: Any) -> str | None:
        if value is None:
            return None if nullable else "must be set"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "is not a number"
        if not math.isfinite(value):
            return "must be a finite number"
        ok = value > minimum if above else value >= minimum
        return None if ok else f"must be {'above' if above else 'at least'} {minimum}"

    return rule


def flag(value: Any) -> str | None:
    """A rule: true or false."""
    return None if isinstance(value, bool) else "is not true or false"


def one_of(*choices: str) -> Rule:
    """One of the given words."""

    def rule(value: Any) -> str | None:
        return None if value in choices else f"is not one of {', '.join(choices)}"

    return rule


def or_auto(rule: Rule) -> Rule:
    """`rule`, or the word auto (null too: both let the program choose)."""

    def either(value: Any) -> str | None:
        if value is None or value == "auto":
            return None
        problem = rule(value)
        return None if problem is None else f"{problem} (or auto)"

    return either


def check_values(cfg: DictConfig, rules: Mapping[str, Rule]) -> None:
    """One line naming the first key whose value breaks its rule (keys absent from cfg are skipped)."""
    for key, rule in rules.items():
        node = OmegaConf.select(cfg, key, default=_ABSENT)
        if node is _ABSENT:
            continue
        problem = rule(node)
        if problem:
            raise ValueError(
                f"{key}={node!r} {problem}" if isinstance(node, str) else f"{key}={node} {problem}"
            )


_ABSENT = object()


def require(cfg: DictConfig, key: str, message: str) -> Any:
    """cfg's value for a required key; a one-line error (`message`) when it is unset."""
    value = cfg.get(key)
    if value in (None, ""):
        raise ValueError(message)
    return value
