"""sample.py's config read and checked once, before torch loads: a bad value is one line in about a second."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ..checkpoint_config import Overrides
from ..sample_options import refuse_sampler_settings
from .sampling_settings import SAMPLING_RULES, SamplingSettings, read_sampling_settings
from .typed import group_choices, typed_keys_under, typed_under

# Keys a user may pass to sample.py only to check them against the checkpoint (null: take the checkpoint's).
CHECKED_KEYS = {
    "image_size": "data.image_size",
    "channels": "data.channels",
    "prediction_type": "prediction_type",
}
# Groups a user may give to sample.py only to check them against the checkpoint (model=unet_small).
CHECKED_GROUPS = ("model", "schedule")


def fixed_by_checkpoint(cfg: DictConfig) -> Overrides:
    """The values given that the checkpoint fixes (image_size, channels, prediction_type, model=…, schedule=…), to
    compare with the stored model: an override that contradicts it is an error."""
    wanted = {key: cfg.get(key) for key in CHECKED_KEYS if cfg.get(key) is not None}
    for group in CHECKED_GROUPS:
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
    typed = frozenset().union(*(typed_keys_under(cfg, group) for group in CHECKED_GROUPS))
    hint = "drop those overrides (sample.py takes them from the checkpoint)"
    options = {
        group: option for group, option in group_choices(cfg).items() if group in CHECKED_GROUPS and option
    }
    return Overrides(wanted, hint, CHECKED_KEYS, options, typed)


def read_sample_settings(cfg: DictConfig) -> SamplingSettings:
    """sample.py's config, read and checked once."""
    fixed = fixed_by_checkpoint(cfg)
    refuse_sampler_settings(cfg.mode, typed_under(cfg, "sampler"))
    missing = "sample.py needs ckpt=<checkpoint>, e.g. ckpt=outputs/train/<date>/<time>/checkpoints/last.ckpt"
    return read_sampling_settings(cfg, SAMPLING_RULES, cfg.mode, missing, fixed)
