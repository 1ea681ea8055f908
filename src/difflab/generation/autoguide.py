"""Autoguidance's guide model (Karras et al. 2024, EDM2): a weaker model of the same data and formulation (a
smaller network, or an earlier checkpoint of the same run), checked against the main model before anything runs."""

from __future__ import annotations

import logging
from typing import Any

import torch

from .model import TrainedModel, model_kind, sr_factor

log = logging.getLogger("difflab")


def check_guide(model: TrainedModel, guide: TrainedModel, source: Any, guide_source: Any) -> None:
    """One line naming what differs when `guide` (read from guide_source) cannot guide `model`: its image shape,
    latent space (pixels, or one autoencoder's latents), schedule, prediction type or conditioning must be the
    model's, since its prediction is mixed with the model's at every step. The network itself may differ (that is the point: a smaller or less-trained one)."""
    differences = []
    formulations = [getattr(getattr(m, "formulation", None), "name", "vp") for m in (guide, model)]
    if formulations[0] != formulations[1]:
        differences.append(f"formulation {formulations[0]} vs {formulations[1]}")
    if tuple(guide.sample_shape) != tuple(model.sample_shape):
        differences.append(f"images {tuple(guide.sample_shape)} vs {tuple(model.sample_shape)}")
    if guide.prediction_type != model.prediction_type:
        differences.append(f"prediction_type {guide.prediction_type} vs {model.prediction_type}")
    ours, theirs = model.schedule.alphas_cumprod, guide.schedule.alphas_cumprod
    same_levels = ours.shape == theirs.shape and torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    # Of another formulation, the formulation alone is named: its settings come with it.
    if not same_levels and formulations[0] == formulations[1]:
        differences.append(_schedule_difference(guide, model))
    spaces = [_space(m) for m in (guide, model)]
    if spaces[0] != spaces[1]:  # the same image shape, but predictions of different things
        differences.append(f"{spaces[0]} vs {spaces[1]}")
    if (guide.condition, guide.num_classes) != (model.condition, model.num_classes):
        differences.append(f"{model_kind(guide)} vs {model_kind(model)}")
    if model.condition == guide.condition == "superres" and sr_factor(guide) != sr_factor(model):
        # Both upscale to the same shape, from low-res images of other sizes: before, taken without a word.
        differences.append(f"sr_factor {sr_factor(guide)} vs {sr_factor(model)}")
    if model.condition == "text":
        encoders = [(m.config.get("data") or {}).get("text_encoder") for m in (guide, model)]
        if None not in encoders and encoders[0] != encoders[1]:
            differences.append(f"text encoder {encoders[0]} vs {encoders[1]}")
    if differences:
        raise ValueError(
            f"guide={guide_source} cannot guide {source}: it must model the same data the same way "
            f"({'; '.join(differences)})"
        )
    if _same_weights(guide, model):
        log.warning(
            "guide=%s holds the same weights as %s: autoguidance then changes nothing (guidance pulls away from the "
            "model's own prediction) and costs a second network call per step; give a weaker model of the same "
            "data (an earlier checkpoint, a smaller network)",
            guide_source,
            source,
        )


def _schedule_difference(guide: TrainedModel, model: TrainedModel) -> str:
    """The settings behind two different noise-level tables, as configured (formulation.shift 3 vs 1): a flow
    model's table comes from its formulation, whose schedule reads alike for both (before, the same words twice)."""
    named = []
    for group, keys in LEVEL_KEYS.items():
        theirs, ours = ((m.config.get(group) or {}) for m in (guide, model))
        for key in sorted(set(theirs) | set(ours)):
            if (keys is None or key in keys) and not key.startswith("_") and theirs.get(key) != ours.get(key):
                named.append(f"{group}.{key} {theirs.get(key)} vs {ours.get(key)}")
    return "; ".join(named) or f"schedule {guide.schedule!r} vs {model.schedule!r}"


# The configured values a model's noise levels come from (not how it was trained to weight them): all of the
# schedule's (a VP formulation holds the same schedule again, not named twice), the others' from their formulation.
LEVEL_KEYS: dict[str, set[str] | None] = {
    "schedule": None,
    "formulation": {"shift", "t_max", "sigma_min", "sigma_max", "rho"},
}


def _same_weights(guide: TrainedModel, model: TrainedModel) -> bool:
    """Whether both networks hold equal weights (False where either has none to compare)."""
    nets = [getattr(m, "net", None) for m in (guide, model)]
    if None in nets:
        return False
    ours, theirs = (net.state_dict() for net in nets)
    if ours.keys() != theirs.keys():
        return False
    return all(a.shape == theirs[k].shape and torch.equal(a, theirs[k].to(a.device)) for k, a in ours.items())


def _space(model: TrainedModel) -> str:
    """Where a model denoises: pixels, or the latents of one autoencoder (named by its weights' hash)."""
    latents = getattr(model, "latents", None)
    return "pixels" if latents is None else f"latents of autoencoder {latents.autoencoder.weights_hash}"
