"""The sampler a config names, bound to a trained model: the one way sample.py, evaluate.py and difflab.load build
one, so a sampler is bound to a checkpoint's schedule and prediction type in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..diffusion import Sampler
from .model import TrainedModel


def build_sampler(config: Mapping[str, Any], model: TrainedModel, **knobs: Any) -> Sampler:
    """The sampler `config` names (a partial: conf/sampler/<name>.yaml or sample.py's sampler group) bound to the
    model's schedule and prediction type; `knobs` (steps=20, eta=0.5, …) override the config's values."""
    from hydra.utils import instantiate  # a partial's `_target_` and values are plain data

    return instantiate(config)(model.schedule, prediction_type=model.prediction_type, **knobs)


def walked_config(config: Mapping[str, Any], sampler: Sampler) -> dict[str, Any]:
    """`config` as the sampler ran it: a timestep_spacing left to the model (null) is the grid it walked."""
    walked = dict(config)
    if "timestep_spacing" in walked:
        walked["timestep_spacing"] = sampler.timestep_spacing
    return walked
