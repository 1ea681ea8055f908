"""A command's model= and schedule= held against a diffusers folder by what they build, not key by key.

A diffusers folder's config is made here from its JSON and spells each group otherwise than the option that
trained it: the schedule as its table of betas (no `name: linear`), the network with every default written out
(`out_channels: 1`, not `null`). Compared key by key, the very options the model was trained with were refused
as contradictions; compared by what they build, only a real difference is named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..checkpoint_config import build
from .diffusers_mapping import UNET_TARGET, unet_arguments
from .dit_mapping import DIT_TARGET, dit_arguments

# The schedule group read_scheduler makes of a DDPM-family scheduler: its betas as a table.
TABLE_TARGET = "difflab.diffusion.NoiseSchedule"
# A table diffusers rebuilt in float32 (a Hub pipeline without trained_betas) is the same schedule.
BETAS_RTOL = 1e-5


def built_contradictions(
    wanted: Mapping[str, Any], config: Mapping[str, Any], allowed: Any = ()
) -> tuple[dict[str, Any], list[str]]:
    """(the wanted values still to compare key by key, `key=new (checkpoint: old)` for each group that builds
    otherwise than the folder's). `wanted` is flat ('model.base_channels': 16) as sample.py's Overrides hold it."""
    left = dict(wanted)
    found = []
    model = _group(left, "model")
    stored_model = config.get("model") or {}
    if model:
        stored_target = stored_model.get("_target_")
        target = model.get("_target_", stored_target)
        if target == stored_target:
            found += _network_differences(model, stored_model)
        else:
            # Another class: its keys mean other things, so the class alone is named.
            found.append(f"model._target_={target} (checkpoint: {stored_target})")
        _drop_group(left, "model")
    schedule = _group(left, "schedule")
    stored_schedule = config.get("schedule") or {}
    if schedule and stored_schedule.get("_target_") == TABLE_TARGET:
        try:
            same = _same_betas(schedule, stored_schedule, allowed)
        except (ValueError, TypeError) as error:  # a schedule that cannot be built is named for what it is
            while error.__cause__ is not None:
                error = error.__cause__
            found.append(f"schedule.name={schedule.get('name')} cannot be built ({error})")
        else:
            if not same:
                found.append(_another_table(schedule, len(stored_schedule["betas"])))
        _drop_group(left, "schedule")
    return left, found


def _group(wanted: Mapping[str, Any], group: str) -> dict[str, Any]:
    """The wanted keys of `group`, unprefixed."""
    prefix = f"{group}."
    return {key[len(prefix) :]: value for key, value in wanted.items() if key.startswith(prefix)}


def _drop_group(wanted: dict[str, Any], group: str) -> None:
    for key in [k for k in wanted if k.startswith(f"{group}.")]:
        del wanted[key]


def _network_differences(model: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """The constructor arguments, defaults filled in, where the wanted network differs from the folder's. Keys
    the command leaves to interpolation (in_channels: ${data.channels}) are the folder's."""
    arguments = {UNET_TARGET: unet_arguments, DIT_TARGET: dit_arguments}.get(stored.get("_target_"))
    if arguments is None:
        return [
            f"model.{k}={v} (checkpoint: {stored.get(k)})" for k, v in model.items() if stored.get(k) != v
        ]
    try:
        new = arguments({**stored, **model})
    except ValueError as error:  # an argument the network does not take
        return [f"model: {error}"]
    old = arguments(stored)
    return [f"model.{k}={new[k]} (checkpoint: {old.get(k)})" for k in new if new[k] != old.get(k)]


def _another_table(schedule: Mapping[str, Any], steps: int) -> str:
    """How a wanted schedule that builds another table than the folder's is named: its name, and its step count
    where that is what differs."""
    named = [f"schedule.name={schedule.get('name')}"]
    if schedule.get("timesteps") not in (None, steps):
        named.append(f"schedule.timesteps={schedule['timesteps']}")
    return f"{' '.join(named)} (checkpoint: another table of {steps} betas)"


def _same_betas(schedule: Mapping[str, Any], stored: Mapping[str, Any], allowed: Any) -> bool:
    """Whether the wanted schedule builds the folder's table of betas."""
    built = build({"schedule": dict(schedule)}, "schedule", allowed, "schedule=")
    table = torch.as_tensor(stored["betas"], dtype=torch.float64)
    ours = built.betas.double()
    return ours.shape == table.shape and torch.allclose(ours, table, rtol=BETAS_RTOL, atol=0.0)
