"""The sampler a config names, bound to a trained model: the one way sample.py, evaluate.py and difflab.load build
one, so a sampler is bound to a checkpoint's schedule and prediction type in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..diffusion import Sampler
from .model import TrainedModel

# conf/sampler's clip_x0: auto clips x̂_0 to the range of what the model makes: pixels lie in [-1, 1]; an
# autoencoder's latents, scaled to unit std, have no fixed range (a third lie outside [-1, 1]) and are not clipped,
# as LDM and Stable Diffusion sample them.
AUTO = "auto"


def build_sampler(config: Mapping[str, Any], model: TrainedModel, **knobs: Any) -> Sampler:
    """The sampler `config` names (a partial: conf/sampler/<name>.yaml or sample.py's sampler group) bound to the
    model's schedule and prediction type; `knobs` (steps=20, eta=0.5, …) override the config's values."""
    from hydra.utils import instantiate  # a partial's `_target_` and values are plain data

    latent = getattr(model, "latents", None) is not None
    return bound_sampler(instantiate(config), model.schedule, model.prediction_type, latent, **knobs)


def bound_sampler(
    factory: Callable[..., Sampler], schedule: Any, prediction_type: str, latent: bool, **knobs: Any
) -> Sampler:
    """`factory` (a sampler config instantiated: a partial) bound to a schedule and prediction type, clip_x0=auto
    made the range of a latent (`latent`) or pixel model; `knobs` override the factory's values."""
    clip = knobs.get("clip_x0", getattr(factory, "keywords", {}).get("clip_x0"))
    if clip == AUTO:
        knobs["clip_x0"] = None if latent else 1.0
    return factory(schedule, prediction_type=prediction_type, **knobs)


def walked_config(config: Mapping[str, Any], sampler: Sampler) -> dict[str, Any]:
    """`config` as the sampler ran it: a timestep_spacing left to the model (null) is the grid it walked, and
    clip_x0=auto the clipping it did."""
    walked = dict(config)
    if "timestep_spacing" in walked:
        walked["timestep_spacing"] = sampler.timestep_spacing
    if walked.get("clip_x0") == AUTO:
        walked["clip_x0"] = sampler.clip_x0
    return walked
