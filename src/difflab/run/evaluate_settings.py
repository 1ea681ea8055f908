"""evaluate.py's config read and checked once, before torch loads: a bad value is one line in about a second."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..value_rules import DATA_RULES, METRIC_RULES, check_inception_score_samples, flag, whole
from .sampling_settings import SAMPLING_RULES, SamplingSettings, read_sampling_settings
from .typed import typed_under

RULES = {
    **SAMPLING_RULES,
    "n": whole(2),  # a covariance needs two samples
    **{f"metrics.{key}": rule for key, rule in METRIC_RULES.items()},
    # The reference data= (before, data.image_size=abc failed comparing a string and data.download=no downloaded).
    **{f"data.{key}": rule for key, rule in DATA_RULES.items()},
    "log_wandb": flag,
}
# What only generating from ckpt= reads (guidance= and guide= have lines of their own).
GENERATION_KEYS = ("n", "seed", "sampler", "precision", "labels", "prompt", "negative_prompt", "superres")
# What scoring an autoencoder does not read: it reconstructs n held-out images, generating nothing (and is the
# autoencoder scored: autoencoder= names one for a latent diffusion checkpoint).
UNREAD_BY_AUTOENCODERS = (*(k for k in GENERATION_KEYS if k != "n"), "guidance", "guide", "autoencoder")


@dataclass(frozen=True)
class EvaluateSettings:
    """evaluate.py's config, read and checked once: what to generate (or the images= to score), the reference
    data= (None: the checkpoint's own), the metric settings, and whether the scores also go to the run's W&B."""

    sampling: SamplingSettings
    images: str | None
    data: DictConfig | None
    metrics: dict[str, Any]
    log_wandb: bool
    # The overrides given that scoring an autoencoder does not read (UNREAD_BY_AUTOENCODERS).
    unread_by_autoencoders: tuple[str, ...] = ()


def read_evaluate_settings(cfg: DictConfig) -> EvaluateSettings:
    """evaluate.py's config, every value and combination checked before anything is loaded or written."""
    if bool(cfg.ckpt) == bool(cfg.images):
        raise ValueError(
            "give exactly one of ckpt=<checkpoint> (generate and score) or images=<folder or .npz>"
        )
    if not cfg.ckpt and cfg.get("guide"):
        raise ValueError(f"guide={cfg.guide} guides a checkpoint's sampling: give ckpt=, not images=")
    # evaluate.py scores samples: it has no edit modes. superres.consistency is read apart, as sample mode
    # refuses it: it applies to a super-resolution checkpoint's scored samples (checked once that is loaded).
    consistency = OmegaConf.select(cfg, "superres.consistency", default=False)
    if not isinstance(consistency, bool):
        raise ValueError(f"superres.consistency={consistency!r} must be true or false")
    apart = cfg.copy()
    OmegaConf.update(apart, "superres.consistency", False, force_add=True)
    sampling = read_sampling_settings(apart, RULES, "sample")
    sampling = replace(sampling, options=replace(sampling.options, consistency=consistency))
    if not cfg.ckpt and float(cfg.guidance) != 1.0:
        raise ValueError(f"guidance={cfg.guidance} needs ckpt=<a conditional checkpoint>, not images=")
    generating = [o for key in GENERATION_KEYS for o in typed_under(cfg, key)]
    if not cfg.ckpt and generating:  # before, taken and ignored: images= scored all its images as they are
        raise ValueError(
            f"{' '.join(generating)} given, but images= is scored as it is (these settings make samples from "
            "ckpt=): drop them"
        )
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True)
    if cfg.ckpt and metrics.get("inception_score"):  # images= are counted once read
        check_inception_score_samples(cfg.n, metrics["isc_splits"], "n")
    unread = tuple(o for key in UNREAD_BY_AUTOENCODERS for o in typed_under(cfg, key))
    return EvaluateSettings(sampling, cfg.images, cfg.get("data"), metrics, cfg.log_wandb, unread)
