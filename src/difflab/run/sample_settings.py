"""sample.py's config read and checked once, before torch loads: a bad value is one line in about a second."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..sample_options import refuse_sampler_settings
from .sampling_settings import SAMPLING_RULES, SamplingSettings, read_sampling_settings
from .typed import typed_under

# Keys a user may pass to sample.py only to check them against the checkpoint (null: take the checkpoint's).
CHECKED_KEYS = {
    "image_size": "data.image_size",
    "channels": "data.channels",
    "prediction_type": "prediction_type",
}


def fixed_by_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """The values given that the checkpoint fixes (image_size, channels, prediction_type, model=…, schedule=…), to
    compare with the stored model: an override that contradicts it is an error."""
    wanted = {key: cfg.get(key) for key in CHECKED_KEYS if cfg.get(key) is not None}
    for group in ("model", "schedule"):
        given = cfg.get(group)
        if given is None:
            continue
        # Values that interpolate other groups (model.in_channels: ${data.channels}) are not compared. The class
        # is, first: before, model=unet_small on a DiT named a shared key's values (num_heads) as the difference.
        items = OmegaConf.to_container(given, resolve=False).items()
        wanted.update({f"{group}._target_": v for k, v in items if k == "_target_"})
        for key, value in items:
            if not key.startswith("_") and not (isinstance(value, str) and value.startswith("${")):
                wanted[f"{group}.{key}"] = value
    return wanted


def read_sample_settings(cfg: DictConfig) -> SamplingSettings:
    """sample.py's config, read and checked once."""
    fixed = fixed_by_checkpoint(cfg)
    refuse_sampler_settings(cfg.mode, typed_under(cfg, "sampler"))
    missing = "sample.py needs ckpt=<checkpoint>, e.g. ckpt=outputs/train/<date>/<time>/checkpoints/last.ckpt"
    return read_sampling_settings(cfg, SAMPLING_RULES, cfg.mode, missing, fixed)
