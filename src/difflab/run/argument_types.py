"""A config group's values held to the types its constructor declares (declared_types.py), before anything
is built from the config."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from ..declared_types import check_known_keys, wrong_kind

CHECKED_GROUPS = ("model", "schedule", "formulation", "sampler")


def check_argument_types(cfg: DictConfig, groups: Sequence[str] = CHECKED_GROUPS) -> None:
    """One line naming the first `<group>.<key>` that its constructor does not take (e.g. a recipe's U-Net width
    kept when model= swaps in a DiT), or whose value is not of its declared kind (number, whole number,
    true/false, list); keys whose types cannot be read, or are anything else, are left to the constructor."""
    for group in groups:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        target = str(node._target_)
        check_known_keys(group, target, [str(k) for k in node])
        wrong = wrong_kind(group, target, OmegaConf.to_container(node, resolve=True))
        if wrong:
            raise ValueError(wrong)
