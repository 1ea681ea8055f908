"""What a run's data serves beside the images and what its network is built to take, agreed before either is built:
one switch (model.num_classes, model.cond_channels, model.text_dim, data.condition or data.captions) is enough, the
other side's values follow from it, and values that contradict each other are one line. Plain values in, the
values to set out: the run module writes them into its config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..text import encoder_dim, encoder_version

Values = dict[str, Any]


def agreed_conditioning(
    data: Mapping[str, Any],
    model: Mapping[str, Any],
    find_classes: Callable[[], tuple[int, list[str] | None]],
) -> tuple[Values, Values]:
    """(values to set in data, values to set in model) so they agree on the conditioning: model.num_classes=K
    alone makes the data serve labels; data.condition=labels alone takes K from the data (`find_classes`: the
    class count of the dataset the data config builds, and its class folders, recorded as data.class_folders); data.condition=superres sets model.cond_channels (model.cond_channels alone makes the data
    serve superres). data.condition=text (or data.captions alone) builds a text-to-image net of the encoder's
    width, and records the encoder's name and installed version (never its weights)."""
    set_data: Values = {}
    condition = data.get("condition")
    if condition is None:
        if model.get("num_classes"):
            condition = set_data["condition"] = "labels"
        elif model.get("cond_channels"):
            condition = set_data["condition"] = "superres"
        elif model.get("text_dim") or data.get("captions"):
            condition = set_data["condition"] = "text"
    if condition == "text":
        text_data, set_model = _text(data, model)
        return {**set_data, **text_data}, set_model
    if condition == "labels":
        count, folders = find_classes()
        if folders is not None:
            set_data["class_folders"] = folders
        # model.num_classes=null keeps a run class-conditional only where data.condition=labels is set.
        switch = "" if data.get("condition") == "labels" else " data.condition=labels"
        return set_data, _labels(model, count, data.get("dataset"), switch)
    if condition == "superres":
        return set_data, _superres(model, int(data["channels"]))
    return set_data, {}


class ClassCountMismatch(ValueError):
    """model.num_classes says another class count than the data has (`found`)."""

    def __init__(self, message: str, found: int) -> None:
        super().__init__(message)
        self.found = found


def _labels(model: Mapping[str, Any], found: int, dataset: Any, switch: str = "") -> Values:
    """`switch`: what else a run must set for model.num_classes=null to keep its labels (review: before, that
    advice alone trained an unconditional model)."""
    if not model.get("num_classes"):
        return {"num_classes": found}
    if int(model["num_classes"]) != int(found):
        raise ClassCountMismatch(
            f"model.num_classes={model['num_classes']} but data={dataset} has {found} classes; "
            f"give model.num_classes={found}, or{switch} model.num_classes=null to take it from the data",
            found,
        )
    return {}


def _superres(model: Mapping[str, Any], channels: int) -> Values:
    """SR3: the U-Net takes the low-res image (the data's channels) beside x_t; it is never dropped, so classes do
    not combine with it."""
    if model.get("num_classes"):
        raise ValueError(
            "model.num_classes with data.condition=superres: class-conditional super-resolution is not supported"
        )
    if not model.get("cond_channels"):
        return {"cond_channels": channels}
    if int(model["cond_channels"]) != channels:
        raise ValueError(
            f"model.cond_channels={model['cond_channels']} but data.channels={channels}: the low-res input has "
            f"the images' channels; drop model.cond_channels (it is taken from the data)"
        )
    return {}


def _text(data: Mapping[str, Any], model: Mapping[str, Any]) -> tuple[Values, Values]:
    """A text-to-image run: the encoder's name and version go into data, its width into model.text_dim."""
    if model.get("num_classes"):
        raise ValueError("data.condition=text and model.num_classes cannot be combined: pick labels or text")
    encoder = data["text_encoder"]
    set_data = {"text_encoder": encoder}
    if not data.get("text_encoder_version"):
        set_data["text_encoder_version"] = encoder_version(encoder)
    width = encoder_dim(encoder)
    if not model.get("text_dim"):
        return set_data, {"text_dim": width}
    if int(model["text_dim"]) != width:
        raise ValueError(
            f"model.text_dim={model['text_dim']} but the text encoder {encoder} gives {width}-d states; "
            "drop model.text_dim (it is taken from the encoder)"
        )
    return set_data, {}
