"""What the entry functions share: objects built from configs, the conditioning the data and
the model agree on, the run's resolved config; where results go is io/results.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ..text import encoder_dim, encoder_version
from .errors import SweepConfigError


def instantiate_entries(cfg: DictConfig | None) -> list[Any]:
    """One object per entry of a dict-of-entries config (callbacks, loggers) that has a `_target_`; entries set
    to null are switched off (lightning-hydra-template style)."""
    if not cfg:
        return []
    return [
        instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def fill_conditioning(cfg: DictConfig) -> None:
    """Fill cfg.data and cfg.model in place so they agree on the conditioning before anything is built or compared:
    model.num_classes=K alone makes the data serve labels; data.condition=labels alone takes K from the data;
    data.condition=superres sets model.cond_channels (model.cond_channels alone makes the data serve superres).
    data.condition=text (or data.captions alone) builds a text-to-image net of the encoder's width, and records
    the encoder's name and installed version (never its weights) in the config."""
    data, model = cfg.data, cfg.model
    with open_dict(data), open_dict(model):
        if model.get("num_classes") and data.get("condition") is None:
            data.condition = "labels"
        if model.get("cond_channels") and data.get("condition") is None:
            data.condition = "superres"
        if (model.get("text_dim") or data.get("captions")) and data.get("condition") is None:
            data.condition = "text"
        if data.get("condition") == "text":
            fill_text(data, model)
        if data.get("condition") == "labels":
            found = instantiate(data).num_classes
            if not model.get("num_classes"):
                model.num_classes = found
            elif int(model.num_classes) != int(found):
                raise ValueError(
                    f"model.num_classes={model.num_classes} but data={data.dataset} has {found} classes; "
                    f"drop model.num_classes (it is taken from the data) or use model.num_classes={found}"
                )
        if data.get("condition") == "superres":
            _fill_superres(data, model)


def _fill_superres(data: DictConfig, model: DictConfig) -> None:
    """SR3: the U-Net takes the low-res image (data.channels of them) beside x_t; it is never dropped, so
    classes do not combine with it."""
    if model.get("num_classes"):
        raise ValueError(
            "model.num_classes with data.condition=superres: class-conditional super-resolution is not supported"
        )
    channels = int(data.channels)
    if not model.get("cond_channels"):
        model.cond_channels = channels
    elif int(model.cond_channels) != channels:
        raise ValueError(
            f"model.cond_channels={model.cond_channels} but data.channels={channels}: the low-res input has "
            f"the images' channels; drop model.cond_channels (it is taken from the data)"
        )


def fill_text(data: DictConfig, model: DictConfig) -> None:
    """A text-to-image run: the encoder's name and version go into data, its width into model.text_dim."""
    if model.get("num_classes"):
        raise ValueError("data.condition=text and model.num_classes cannot be combined: pick labels or text")
    encoder = data.text_encoder
    data.text_encoder = encoder
    if not data.get("text_encoder_version"):
        data.text_encoder_version = encoder_version(encoder)
    width = encoder_dim(encoder)
    if not model.get("text_dim"):
        model.text_dim = width
    elif int(model.text_dim) != width:
        raise ValueError(
            f"model.text_dim={model.text_dim} but the text encoder {encoder} gives {width}-d states; "
            "drop model.text_dim (it is taken from the encoder)"
        )


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, with the Hydra group choices (model=…, data=…) recorded beside it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("module", None)  # it only points at model, schedule, optim, …: stored once, under their names
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        config["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return config


def optimized_metric(cfg: DictConfig, metrics: Mapping[str, float]) -> float | None:
    """The value a hyperparameter sweeper minimises: cfg.optimized_metric (e.g. val/loss) among a run's final
    metrics; None when unset."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        logged = ", ".join(sorted(metrics)) or "none"
        raise SweepConfigError(
            f"optimized_metric={name} was not logged by this run; logged metrics: {logged}"
        )
    return float(metrics[name])
