"""Write a model folder: the network's weights as safetensors and the config that rebuilds it as JSON, which
`difflab.load` (and `sample.py ckpt=<folder>`) read back without unpickling anything."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checkpoint import FOLDER_CONFIG, FOLDER_FORMAT, FOLDER_WEIGHTS, LoadedModel

# The groups that rebuild and describe the model; the rest of a run's config (paths, loggers, trainer) is the
# machine it ran on, not the model.
KEPT = ("model", "schedule", "formulation", "prediction_type", "data", "choices")
MACHINE_KEYS = ("root",)  # data.root: a path on the training machine


def portable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's config that describes the model, without machine paths."""
    kept = {key: config[key] for key in KEPT if key in config}
    if isinstance(kept.get("data"), Mapping):
        kept["data"] = {k: v for k, v in kept["data"].items() if k not in MACHINE_KEYS}
    return kept


def write_model_folder(loaded: LoadedModel, out: Path) -> None:
    """`out`/model.safetensors (the loaded weights: EMA when the run had EMA) and `out`/difflab_config.json."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in loaded.net.state_dict().items()}
    save_file(state, str(out / FOLDER_WEIGHTS), metadata={"format": "pt"})
    record = {
        "format": FOLDER_FORMAT,
        "config": portable_config(loaded.config),
        "weights": loaded.weights,
        "global_step": loaded.global_step,
    }
    (out / FOLDER_CONFIG).write_text(json.dumps(record, indent=2))
