"""The way into an autoencoder: a train.py checkpoint or run folder of an autoencoder run (task=autoencoder), or a
diffusers AutoencoderKL folder, read as data (weights-only, allowlisted targets) and named by a hash of its
weights, which is what a latent cache or a latent-diffusion checkpoint records of it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint_config import build
from .checkpoint_file import (
    CONFIG_KEY,
    is_model_folder,
    network_state,
    read_checkpoint,
    read_checkpoint_file,
    run_checkpoint,
)
from .model_folder.diffusers_autoencoder import is_autoencoder_folder, load_autoencoder_folder
from .model_folder.state_fit import state_mismatch
from .models.autoencoder import AutoencoderKL
from .models.weights_hash import weights_hash

AUTOENCODER_TASK = "autoencoder"


@dataclass
class LoadedAutoencoder:
    """An autoencoder in eval mode, the config it was built from, where it came from and its weights' hash."""

    net: AutoencoderKL
    config: dict[str, Any]
    source: str
    weights_hash: str
    global_step: int = 0  # the training step of a run's checkpoint (0: a diffusers folder)
    # A diffusers folder's scaling_factor: the latent scale its latents are made for (Stable Diffusion's 0.18215);
    # None for difflab's own autoencoder runs, whose scale is estimated on the data (1 / std of its latents).
    scaling_factor: float | None = None


def is_autoencoder_config(config: dict[str, Any]) -> bool:
    """Whether a stored run config is an autoencoder run's."""
    return config.get("task") == AUTOENCODER_TASK


def is_autoencoder(path: str | Path) -> bool:
    """Whether `path` is a diffusers AutoencoderKL folder, or a checkpoint (or run folder) of an autoencoder run;
    False for anything unreadable (the reader that follows names the problem)."""
    if is_autoencoder_folder(path):
        return True
    try:
        return is_autoencoder_config(read_checkpoint_file(run_checkpoint(path), mmap=True)[CONFIG_KEY])
    except (OSError, ValueError):
        return False


def not_an_autoencoder(path: str | Path) -> ValueError:
    return ValueError(
        f"{path} is not an autoencoder: give a checkpoint of an autoencoder run (model=autoencoder_kl_*) "
        "or a diffusers AutoencoderKL folder"
    )


def _what_the_folder_is(folder: Path) -> str | None:
    """What a folder given as autoencoder= is, where it is close to one, as the rest of an error line: before,
    each was 'is not an autoencoder'."""
    # export.py's latent pipeline: its autoencoder is beside the net.
    if is_autoencoder_folder(folder / "vae"):
        return f"is a pipeline folder: its autoencoder is its vae/, give autoencoder={folder / 'vae'}"
    config = folder / "config.json"
    if config.is_file():
        try:
            json.loads(config.read_text())
        except (OSError, ValueError) as error:
            return f"has a config.json that cannot be read ({error}): a diffusers AutoencoderKL folder needs it whole"
    if (folder / "checkpoints").is_dir() or (folder / ".hydra").is_dir():
        return "is a run folder that holds no checkpoint yet: give it once its run has written one"
    return None


def load_autoencoder(
    path: str | Path, device: torch.device | str = "cpu", allowed_targets: Iterable[str] = ()
) -> LoadedAutoencoder:
    """The autoencoder in a diffusers AutoencoderKL folder or an autoencoder run's checkpoint (or run folder);
    a one-line error for anything else (a diffusion checkpoint, a damaged file)."""
    if is_autoencoder_folder(path):
        net, args = load_autoencoder_folder(path)
        config = {"model": {"_target_": "difflab.models.AutoencoderKL", **args}, "task": AUTOENCODER_TASK}
        source = f"diffusers folder {path}"
        return LoadedAutoencoder(net.to(device), config, source, weights_hash(net), 0, args["scaling_factor"])
    if not Path(path).exists():
        raise FileNotFoundError(f"autoencoder not found: {path}")
    file = Path(run_checkpoint(path))
    steps = sorted(file.glob("checkpoints/step_*.ckpt")) if file.is_dir() else []
    if steps:  # a run folder whose last.ckpt is gone (removed, or a run that wrote none)
        raise ValueError(
            f"{path} is a run folder without last.ckpt: give one of its checkpoints, e.g. {steps[-1]}"
        )
    if is_model_folder(file):  # no run, no sharded checkpoint, no AutoencoderKL (e.g. a folder of pictures)
        what = _what_the_folder_is(file)
        raise ValueError(f"{path} {what}") if what else not_an_autoencoder(path)
    ckpt = read_checkpoint(file, allowed_targets=allowed_targets)
    config = ckpt[CONFIG_KEY]
    if not is_autoencoder_config(config):
        raise not_an_autoencoder(path)
    net = build(config, "model", allowed_targets)
    state = network_state(ckpt) or {}
    problem = state_mismatch(net.state_dict(), state)
    if problem:
        raise ValueError(f"checkpoint {file} does not match its stored autoencoder config: {problem}")
    net.load_state_dict(state)
    net.eval()
    step = int(ckpt.get("global_step", 0))
    return LoadedAutoencoder(net.to(device), config, f"checkpoint {file}", weights_hash(net), step)
