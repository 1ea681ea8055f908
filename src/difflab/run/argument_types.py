"""A group's values held to the types its constructor declares (model, schedule, formulation), so that
`model.dropout=abc` names its key instead of failing inside the constructor with what Python tripped over."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence
from types import NoneType, UnionType
from typing import Any

from omegaconf import DictConfig, OmegaConf

CHECKED_GROUPS = ("model", "schedule", "formulation")


def check_argument_types(cfg: DictConfig, groups: Sequence[str] = CHECKED_GROUPS) -> None:
    """One line naming the first `<group>.<key>` whose value is not of its declared kind (number, whole number,
    true/false, list); keys whose types cannot be read, or are anything else, are left to the constructor."""
    for group in groups:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        hints = declared_types(str(node._target_))
        for key, value in OmegaConf.to_container(node, resolve=True).items():
            problem = mismatch(value, hints[key]) if key in hints else None
            if problem:
                shown = repr(value) if isinstance(value, str) else value
                raise ValueError(f"{group}.{key}={shown} {problem}")


def declared_types(target: str) -> dict[str, Any]:
    """{argument: type hint} of the named parameters of a `_target_` (a class or a function); {} when unreadable."""
    from hydra.utils import get_object

    try:
        built = get_object(target)
        function = built.__init__ if inspect.isclass(built) else built
        hints = typing.get_type_hints(function)
        named = {
            name
            for name, p in inspect.signature(function).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
    except Exception:  # a target this check cannot read: its constructor checks its own values
        return {}
    return {name: hint for name, hint in hints.items() if name in named}


def _kinds(hint: Any) -> set[type] | None:
    """The plain kinds a hint allows (int, float, bool, None, list); None when it allows anything else too."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, UnionType) else (hint,)
    kinds: set[type] = set()
    for option in options:
        origin = typing.get_origin(option) or option
        if origin in (int, float, bool, NoneType):
            kinds.add(origin)
        elif inspect.isclass(origin) and issubclass(origin, Sequence) and origin is not str:
            kinds.add(list)
        else:
            return None
    return kinds


def mismatch(value: Any, hint: Any) -> str | None:
    """What is wrong with `value` for an argument of type `hint` (None when it fits, or the hint is not plain)."""
    kinds = _kinds(hint)
    if kinds is None or value is None:
        return None
    if isinstance(value, bool):
        fits = bool in kinds
    elif isinstance(value, int):
        fits = bool(kinds & {int, float})
    elif isinstance(value, float):
        fits = float in kinds
    else:
        fits = isinstance(value, list | tuple) and list in kinds
    if fits:
        return None
    if float in kinds:
        return "is not a number"
    if int in kinds:
        return "is not a whole number"
    if bool in kinds:
        return "is not true or false"
    return "is not a list"
