"""What to tell a user whose override names a key the composed config does not have: the options of its group
that set it (`trainer.strategy` → trainer=ddp or trainer=fsdp), else the nearest valid key, else how to add it."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..nearest_word import nearest_word

# Options named one by one at most; more are counted.
NAMED_OPTIONS = 2


# Where nothing reads a key added with + (the scripts that read their own config's keys by name).
NOT_READ = "a key added with + would not be read (--help lists the keys)"


def unknown_key_hint(
    conf_dir: Path,
    key: str,
    keys: set[str],
    override_line: str,
    selected: dict[str, list[str]],
    new_keys_read: bool = True,
) -> str:
    """The part of the error after "<key> is not a key of the … config; ". `keys`: the composed config's dotted
    keys; `selected`: each config group's chosen options ([] for a group chosen as null); `new_keys_read`: False
    where a key added with + is never read (sample.py reads its keys by name), so adding it is not suggested."""
    add = f"add it with +{override_line} if it is new" if new_keys_read else NOT_READ
    group = key.partition(".")[0]
    if group not in selected:
        # A group of another config (sample.py's data comes from the checkpoint).
        if (conf_dir / group).is_dir():
            return f"this config has no {group} group, so nothing reads {key} here"
        close = nearest_key(key, keys)
        return f"did you mean {close}?" if close else add
    if setters := _options_setting(conf_dir, key, keys, selected[group]):
        return f"{_sets_it(setters)}, or {add}"
    close = nearest_key(key, keys)
    # A key of another option may be nearer (model.hidden_siz: the DiT's hidden_size, not the U-Net's image_size).
    near = nearest_key(key, _option_keys(conf_dir, group))
    nearer = near if near and _likeness(key, near) > _likeness(key, close) else None
    if nearer and (setters := _options_setting(conf_dir, nearer, keys, selected[group])):
        return f"did you mean {nearer} ({_sets_it(setters)})?"
    return f"did you mean {close}?" if close else add


def options_composed(conf_dir: Path, group: str, composed: set[str]) -> list[str]:
    """The options of a group chosen as a list in a defaults list (an experiment's `override /callbacks: [default,
    fid]`), which Hydra does not record among its choices: those whose every key the composed group holds (an
    option made of others, with a defaults list of its own, cannot be told apart so)."""
    return [
        name
        for name, option in _group_options(conf_dir, group).items()
        if option and "defaults" not in option and set(option) <= composed
    ]


def _likeness(key: str, other: str | None) -> float:
    return 0.0 if other is None else difflib.SequenceMatcher(None, key, other).ratio()


def _sets_it(setters: list[str]) -> str:
    if len(setters) <= NAMED_OPTIONS:
        return f"{' or '.join(setters)} sets it"
    return f"{', '.join(setters[:NAMED_OPTIONS])} and {len(setters) - NAMED_OPTIONS} more set it"


def _options_setting(conf_dir: Path, key: str, keys: set[str], chosen: list[str]) -> list[str]:
    """How to choose each option file of the key's group that holds the rest of the key: `group=option`, or for
    an option that adds to the chosen ones (callbacks/fid.yaml) the list with it added."""
    group, _, rest = key.partition(".")
    if not rest:
        return []
    composed = {k.split(".")[1] for k in keys if k.startswith(f"{group}.")}
    found = []
    for name, option in _group_options(conf_dir, group).items():
        if rest not in set(dotted_keys(option)):
            continue
        adds_to_chosen = composed.isdisjoint(set(option) - {"defaults"})
        choice = f"[{','.join([*chosen, name])}]" if adds_to_chosen and chosen else name
        found.append(f"{group}={choice}")
    return found


def _option_keys(conf_dir: Path, group: str) -> set[str]:
    """Every dotted key some option file of the group holds (`formulation.sigma_data` of formulation=edm)."""
    keys = {group}
    for option in _group_options(conf_dir, group).values():
        keys |= {f"{group}.{k}" for k in dotted_keys(option) if not k.startswith("defaults")}
    return keys


@functools.cache
def _group_options(conf_dir: Path, group: str) -> dict[str, dict[str, Any]]:
    """The option files of a config group by name, as read (${…} values unresolved), read once; files placed
    elsewhere in the config (`@package`, e.g. experiment recipes) hold none of the group's keys."""
    folder = conf_dir / group
    if not group or not folder.is_dir():
        return {}
    options = {}
    for path in sorted(folder.glob("*.yaml")):
        if "@package" in path.read_text().split("\n", 1)[0]:
            continue
        option = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if isinstance(option, dict):
            options[path.stem] = option
    return options


def dotted_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every key of a nested dict as a dotted path, parents first."""
    if isinstance(node, dict):
        for key, child in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from dotted_keys(child, path)


def nearest_key(key: str, keys: set[str]) -> str | None:
    """A misspelt last name is compared with its siblings only, so `trainer.strategi` is not matched to
    `trainer._target_` by their shared `trainer.`; Hydra's `_target_`-like keys are never suggested."""
    parent, _, name = key.rpartition(".")
    if parent == "":
        # A group's key typed without its group (lr= for optim.lr): the shallowest key of that exact name, a
        # sampler's first among equals (steps= is sampler.steps as pipe.sample names it, not inpaint.steps).
        nested = sorted(
            (k.count("."), not k.startswith("sampler."), k)
            for k in keys
            if k.rpartition(".")[2] == name and _public(k)
        )
        if nested:
            return nested[0][2]
    if parent == "" or parent in keys:
        siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
        close = nearest_word(name, [s for s in siblings if not s.startswith("_")])
        return None if not close else f"{parent}.{close}" if parent else close
    return nearest_word(key, sorted(k for k in keys if _public(k)))


def _public(key: str) -> bool:
    """Not one of Hydra's `_target_`-like keys, nor under one."""
    return not any(part.startswith("_") for part in key.split("."))
