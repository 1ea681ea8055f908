"""A model folder, written and read: the network's weights as safetensors and the config that rebuilds it as JSON,
which `difflab.load` (and `sample.py ckpt=<folder>`) read back without unpickling anything."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..io.diffusers_kinds import foreign_network, what_model_folder_is


class StoredModel(Protocol):
    """What a model folder stores of a loaded model (difflab.checkpoint.LoadedModel is one)."""

    net: nn.Module
    config: dict[str, Any]
    weights: str
    global_step: int


FOLDER_CONFIG = "difflab_config.json"
FOLDER_WEIGHTS = "model.safetensors"
FOLDER_FORMAT = "difflab-safetensors/1"


def read_model_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str, int]:
    """(config as stored, network weights, "ema"|"raw", global step) of a model folder; only JSON and safetensors
    are read, so no code can run (difflab.checkpoint holds the config to the allowlist before building it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    config_file, weights_file = folder / FOLDER_CONFIG, folder / FOLDER_WEIGHTS
    if not config_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(
            f"{folder} is not a difflab model folder (it needs {FOLDER_CONFIG} and {FOLDER_WEIGHTS}, "
            f"as export.py format=safetensors writes them) nor a run folder (checkpoints/last.ckpt){_nearly(folder)}"
        )
    try:
        record = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"could not read {config_file}: {error}") from error
    if (
        not isinstance(record, dict)
        or record.get("format") != FOLDER_FORMAT
        or not isinstance(record.get("config"), dict)
    ):
        raise ValueError(f"{config_file} is not a difflab model config (format {FOLDER_FORMAT})")
    try:
        state = load_file(weights_file)
    except (OSError, SafetensorError) as error:
        raise ValueError(f"could not read {weights_file}: {error}") from error
    return record["config"], state, str(record.get("weights", "raw")), int(record.get("global_step", 0))


# The groups that rebuild and describe the model; the rest of a run's config (paths, loggers, trainer) is the
# machine it ran on, not the model.
# cond_drop_prob: whether guidance has a trained unconditional prediction to use (sample.py warns where not).
KEPT = ("model", "schedule", "formulation", "prediction_type", "data", "choices", "cond_drop_prob")
MACHINE_KEYS = ("root",)  # data.root: a path on the training machine


def portable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's config that describes the model, without machine paths."""
    kept = {key: config[key] for key in KEPT if key in config}
    if isinstance(kept.get("data"), Mapping):
        kept["data"] = {k: v for k, v in kept["data"].items() if k not in MACHINE_KEYS}
    return kept


def write_model_folder(loaded: StoredModel, out: Path) -> None:
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


def _nearly(folder: Path) -> str:
    """What the folder that is not a model folder is instead, when it is close to one (empty: nothing known)."""
    steps = sorted((folder / "checkpoints").glob("step_*.ckpt")) if (folder / "checkpoints").is_dir() else []
    if steps:
        return f"; it is a run folder without last.ckpt: give one of its checkpoints, e.g. {steps[-1]}"
    held = sorted(folder.glob("*.ckpt"), key=lambda path: (path.name != "last.ckpt", path.name))
    if held:  # a run's checkpoints/ folder, given for the run folder above it (which reads its last.ckpt)
        run = folder.name == "checkpoints" and held[0].name == "last.ckpt"
        return f"; it holds checkpoints: give one of them, e.g. {held[0]}" + (
            f", or the run folder {folder.parent}" if run else ""
        )
    # before, any diffusers folder was "one part of a diffusers pipeline", its parent given as the pipeline's
    # folder, and a pipeline of a network difflab does not load was named nothing at all (helper report)
    known = what_model_folder_is(folder) or foreign_network(folder)
    return f"; {known}" if known else ""
