"""The formulation group checked before anything is built: its values are one line, not a failure at step 1."""

from __future__ import annotations

import warnings
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from .errors import one_line
from .typed import typed_under


def build_formulation(cfg: DictConfig) -> Any:
    """Build cfg.formulation (σ_data, P_std, shift, weighting, … are checked by its constructor); a bad value is a
    ValueError naming the group. Returns the formulation (None when the config has no group)."""
    node = cfg.get("formulation")
    if node is None:
        return None
    try:
        return instantiate(node)
    except Exception as error:  # Hydra wraps the constructor's ValueError in an InstantiationException
        raise ValueError(f"formulation={formulation_name(node)}: {one_line(error)}") from error


def check_prediction_type_applies(cfg: DictConfig) -> None:
    """prediction_type chooses what a vp network predicts; edm and flow fix their own target, so another value
    would be ignored without a word (a fresh run only: a resume keeps what its checkpoint was trained with)."""
    node = cfg.get("formulation")
    if node is None or str(cfg.get("prediction_type")) == "epsilon":
        return
    name = formulation_name(node)
    if name != "vp":
        raise ValueError(
            f"prediction_type={cfg.prediction_type} does not apply to formulation={name}: its network's target is "
            f"fixed by the formulation; use formulation=vp for prediction_type={cfg.prediction_type}, or leave "
            "prediction_type out"
        )


def warn_if_zero_snr_predicts_epsilon(cfg: DictConfig) -> None:
    """zero_terminal_snr makes the last timestep pure noise: a network predicting ε there says nothing about x0
    (x̂0 = (x_T − σ·ε̂)/α with α ≈ 0), which is why Lin et al. 2024 pair the rescale with v-prediction."""
    node = cfg.get("formulation")
    if node is None or not node.get("zero_terminal_snr") or str(cfg.get("prediction_type")) != "epsilon":
        return
    warnings.warn(
        "formulation.zero_terminal_snr=true with prediction_type=epsilon: at the last timestep x_T is pure noise, "
        "so a predicted ε gives no x0 (Lin et al. 2024 pair the rescale with prediction_type=v)",
        stacklevel=2,
    )


def check_schedule_applies(cfg: DictConfig) -> None:
    """The schedule group holds a vp network's noise tables; edm and flow build their own noise levels, so a
    schedule the user typed (schedule=cosine, schedule.timesteps=500) would be ignored without a word. Its default
    cannot be told from a choice, so only what the command line set is refused (a fresh run only)."""
    node = cfg.get("formulation")
    typed = typed_under(cfg, "schedule")
    if node is None or not typed:
        return
    name = formulation_name(node)
    if name != "vp":
        raise ValueError(
            f"{typed[-1].lstrip('+')} does not apply to formulation={name}: it builds its own noise levels "
            f"(conf/formulation/{name}.yaml); leave schedule out, or use formulation=vp for a schedule"
        )


def formulation_name(node: DictConfig) -> str:
    """The group option a formulation config is (vp, edm, flow), from its class's `name`."""
    target = str(node.get("_target_", ""))
    try:
        return str(get_class(target).name)
    except Exception:  # not a difflab formulation: its class name says enough
        return target.rsplit(".", 1)[-1]


def own_values(node: DictConfig) -> dict[str, Any]:
    """A formulation config's own values: not those it interpolates from other groups (vp's schedule and
    prediction_type), which are compared where they live."""
    values = OmegaConf.to_container(node, resolve=False)
    return {k: v for k, v in values.items() if not (isinstance(v, str) and v.startswith("${"))}
