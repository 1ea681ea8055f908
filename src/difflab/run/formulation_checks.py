"""The formulation group checked before anything is built: its values are one line, not a failure at step 1."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from .errors import one_line


def check_formulation(cfg: DictConfig) -> Any:
    """Build cfg.formulation (σ_data, P_std, shift, weighting, … are checked by its constructor); a bad value is a
    ValueError naming the group. Returns the formulation (None when the config has no group)."""
    node = cfg.get("formulation")
    if node is None:
        return None
    try:
        return instantiate(node)
    except Exception as error:  # Hydra wraps the constructor's ValueError in an InstantiationException
        raise ValueError(
            f"formulation={node.get('_target_', '?').rsplit('.', 1)[-1].lower()}: {one_line(error)}"
        ) from error


def diffusers_refusal(formulation: Any) -> str | None:
    """Why a model of `formulation` cannot be exported as a diffusers DDPM pipeline (None: it can)."""
    name = getattr(formulation, "name", "vp")
    if name == "vp":
        return None
    return (
        f"a formulation={name} model has no DDPMScheduler equivalent here; export it with format=safetensors"
    )
