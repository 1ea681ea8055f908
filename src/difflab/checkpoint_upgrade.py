"""Bring the config stored in an older checkpoint (or model folder) up to date, once, where it is read: each key a
later version added is filled with the value the code of that time used, so no reader restates a default."""

from __future__ import annotations

from typing import Any

from .text.encoder import DEFAULT_ENCODER


def upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the keys older checkpoints lack filled in (a new dict; the stored one is left as read)."""
    config = {**config}
    config.setdefault("prediction_type", "epsilon")  # before x0 and v prediction: ε only
    data = config.get("data")
    if isinstance(data, dict):
        data = config["data"] = {**data}
        if data.get("dataset") == "folder":
            data.setdefault("held_out_by", "order")  # before data.held_out_by: a permutation of the files
        if data.get("condition") == "superres":
            data.setdefault("sr_factor", 4)  # before data.sr_factor: 4× only
        if data.get("condition") == "text":
            data["text_encoder"] = data.get("text_encoder") or DEFAULT_ENCODER  # before a choice of encoder
            data["max_tokens"] = data.get("max_tokens") or 16  # before data.max_tokens
    return config
