"""The kinds of value a `_target_`'s constructor declares (model, schedule, formulation, sampler), and whether a
value is of one: so that `model.dropout=abc`, typed or stored in a checkpoint, names its key instead of failing
inside the constructor with what Python tripped over."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping, Sequence
from types import NoneType, UnionType
from typing import Any


def check_known_keys(group: str, target: str, keys: Sequence[str]) -> None:
    """One line for a key the target's constructor has no argument for, with the nearest one it has."""
    accepted = argument_names(target)
    if accepted is None:
        return
    for key in keys:
        if key.startswith("_") or key in accepted:  # _target_, _partial_, …: Hydra's own keys
            continue
        close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.8)
        typo = f"did you mean {group}.{close[0]}? " if close else ""
        raise ValueError(
            f"{group}.{key} is not an argument of {target}; {typo}if a recipe set it for another {group}, "
            f"drop it with ~{group}.{key}"
        )


def constructor(target: str) -> Any:
    """The function a `_target_` calls (a class's __init__); None when it cannot be imported or has no readable
    signature."""
    from hydra.utils import get_object

    try:
        built = get_object(target)
        function = built.__init__ if inspect.isclass(built) else built
        inspect.signature(function)
    except Exception:  # a target this check cannot read: its constructor checks its own values
        return None
    return function


def argument_names(target: str) -> set[str] | None:
    """The named arguments a `_target_` takes; None when it takes any (**kwargs) or cannot be read. A class whose
    __init__ passes **kwargs on (difflab's samplers: HeunSampler(schedule, s_churn=…, **options)) takes the named
    arguments of the __init__s above it, up to one without **kwargs."""
    function = constructor(target)
    if function is None:
        return None
    from hydra.utils import get_object

    built = get_object(target)
    chain = (
        [c.__dict__["__init__"] for c in built.__mro__ if "__init__" in c.__dict__]
        if inspect.isclass(built)
        else [function]
    )
    names: set[str] = set()
    for depth, init in enumerate(chain):
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # a builtin's __init__: nothing to read
            return None
        # Above the class itself only keyword-only arguments come through **kwargs: the ones before `*` the class
        # passes itself (a sampler's core, given twice from sampler.core=…: a TypeError).
        names |= {p.name for p in parameters if p.kind == p.KEYWORD_ONLY} if depth else named_parameters(init)
        names -= {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names
    return None


def declared_types(target: str) -> dict[str, Any]:
    """{argument: type hint} of the named parameters of a `_target_` (a class or a function); {} when unreadable."""
    function = constructor(target)
    if function is None:
        return {}
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # hints naming what cannot be imported: the constructor checks its own values
        return {}
    named = named_parameters(function)
    return {name: hint for name, hint in hints.items() if name in named}


def named_parameters(function: Any) -> set[str]:
    """The parameters of `function` passed by name (not *args or **kwargs)."""
    parameters = inspect.signature(function).parameters.items()
    return {name for name, p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


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


def wrong_kind(group: str, target: str, values: Mapping[str, Any]) -> str | None:
    """`<group>.<key>=<value> <what is wrong>` for the first of `values` not of the kind `target`'s constructor
    declares for it; None when all fit (or their kinds cannot be read)."""
    hints = declared_types(target)
    for key, value in values.items():
        problem = mismatch(value, hints[key]) if key in hints else None
        if problem:
            shown = repr(value) if isinstance(value, str) else value
            return f"{group}.{key}={shown} {problem}"
    return None


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
