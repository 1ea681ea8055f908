"""The one way into a checkpoint: read it as data, rebuild only allowlisted objects, compare it with a command.

Every reader (sample, edit, evaluate, resume, notebooks) comes through here. A checkpoint is data, never code:
`torch.load(weights_only=True)` refuses pickled objects, and the config stored inside may only name `_target_`s
from `ALLOWED_TARGETS` (plus those a user lists explicitly in `allowed_targets`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint_config import Overrides, build, check_contradictions
from .checkpoint_file import (
    CONFIG_KEY,
    network_state,
    read_checkpoint,
    read_checkpoint_file,
    read_model,
    run_checkpoint,
    stored_step,
)
from .diffusion import NoiseSchedule
from .diffusion.formulations.timestep_face import sampling_view
from .latent_space import exported_latent_space, load_latent_space
from .model_folder.folder_overrides import built_contradictions
from .model_folder.state_fit import state_mismatch

__all__ = [
    "CONFIG_KEY",
    "LoadedModel",
    "load_model",
    "load_with_guide",
    "network_state",
    "read_checkpoint",
    "read_checkpoint_file",
    "read_model",
    "run_checkpoint",
    "stored_step",
]


@dataclass
class LoadedModel:
    """A denoiser with its schedule and the settings it was trained with."""

    net: nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    config: dict[str, Any]
    weights: str  # "ema" or "raw"
    global_step: int
    formulation: Any = None  # what trained it (None: a checkpoint from before formulations, trained as VP)
    latents: Any = None  # latent diffusion: its LatentSpace (the denoiser makes latents, generation decodes)

    @property
    def sampling_net(self) -> nn.Module:
        """The network as the samplers call it, model(x_t, t, cond) on `schedule` (EDM/flow: their ε-face)."""
        return sampling_view(self.net, self.schedule, self.prediction_type, self.formulation)[0]

    @property
    def condition(self) -> str | None:
        """What the model is conditioned on (None, "labels", …), as the data served it in training."""
        return (self.config.get("data") or {}).get("condition")

    @property
    def num_classes(self) -> int | None:
        return (self.config.get("model") or {}).get("num_classes")

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        data = self.config["data"]
        return (int(data["channels"]), int(data["image_size"]), int(data["image_size"]))

    @property
    def generated_shape(self) -> tuple[int, int, int]:
        """What the denoiser makes: the latent shape of a latent diffusion model, else the image shape."""
        return self.sample_shape if self.latents is None else self.latents.latent_shape


def load_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    allowed_targets: Iterable[str] = (),
    overrides: Overrides | None = None,
    autoencoder: str | Path | None = None,
) -> LoadedModel:
    """Rebuild the denoiser and schedule from the checkpoint's config and load its (EMA, when present) weights.

    `path` is a .ckpt written by train.py (a file, or a folder of shards: trainer.strategy.state_dict_type=sharded,
    put back together in memory), a train.py run folder (its checkpoints/last.ckpt), a folder written by
    `export.py format=safetensors` or a diffusers pipeline folder of difflab's U-Net or DiT. A latent diffusion
    checkpoint brings its autoencoder (from the recorded path, or `autoencoder`, a moved copy with the same hash).
    Read straight down: the file or folder read once (its config brought up to date and held to the allowlist:
    checkpoint_file.read_model), compared with the `overrides` a command gave, then everything it names built and
    the weights loaded."""
    stored = read_model(path, allowed_targets)
    config = stored.config
    if autoencoder is not None and not config.get("autoencoder"):  # before, ignored without a word
        raise ValueError(
            f"autoencoder={autoencoder} given, but {stored.where} is not a latent diffusion model (it makes "
            "pixels): drop autoencoder="
        )
    exported_latent = config.get("autoencoder") and stored.kind == "diffusers folder"
    if config.get("autoencoder") and stored.kind not in ("checkpoint", "diffusers folder"):
        raise ValueError(f"{stored.where} is a latent diffusion model: sample its train.py checkpoint")
    if exported_latent and autoencoder is not None:
        raise ValueError(
            f"autoencoder={autoencoder} given, but {stored.where} decodes through its own vae/: drop autoencoder="
        )
    if config.get("task") == "autoencoder":
        raise ValueError(
            f"{stored.where} is an autoencoder (task=autoencoder), not a diffusion model: it cannot sample or "
            f"edit; evaluate.py ckpt={path} scores its reconstructions"
        )
    # The formulation is data like the rest (allowlisted targets); checkpoints from before it load as VP.
    formulation = (
        build(config, "formulation", allowed_targets, stored.where) if config.get("formulation") else None
    )
    if overrides is not None:
        refuse_a_prediction_type_the_formulation_fixes(overrides.values, formulation, stored.where)
        wanted, found = overrides.compared(config), []
        if stored.kind == "diffusers folder":
            wanted, found = built_contradictions(wanted, config, allowed_targets)
        check_contradictions(wanted, config, path, overrides.hint, overrides.stored_as, found)
    net = build(config, "model", allowed_targets, stored.where)
    schedule = build(config, "schedule", allowed_targets, stored.where)
    problem = state_mismatch(net.state_dict(), stored.state)
    if problem:
        raise ValueError(f"checkpoint {stored.path} does not match its stored model config: {problem}")
    net.load_state_dict(stored.state)
    # NHWC: the faster convolution layout for sampling too (the same values; see DiffusionModule).
    net.to(device, memory_format=torch.channels_last).eval()
    _, schedule, prediction_type = sampling_view(
        net, schedule, config.get("prediction_type", "epsilon"), formulation
    )
    loaded = LoadedModel(net, schedule, prediction_type, config, stored.weights, stored.step, formulation)
    if exported_latent:
        loaded.latents = exported_latent_space(config["autoencoder"], loaded.sample_shape, device)
    elif config.get("autoencoder"):
        loaded.latents = load_latent_space(
            stored.latent_record, loaded.sample_shape, stored.where, device, autoencoder
        )
    return loaded


def load_with_guide(
    path: str | Path,
    guide: str | Path | None,
    device: torch.device | str = "cpu",
    allowed_targets: Iterable[str] = (),
    overrides: Overrides | None = None,
    autoencoder: str | Path | None = None,
) -> tuple[LoadedModel, LoadedModel | None]:
    """The model at `path` and autoguidance's weaker model at `guide` (None: no guide), read by the same loader onto
    the same device under the same allowlist; `overrides` are the main model's, `autoencoder` (a moved copy) is
    read by both (a guide must denoise the same latents)."""
    loaded = load_model(path, device, allowed_targets, overrides, autoencoder)
    if guide is None:
        return loaded, None
    try:
        return loaded, load_model(guide, device, allowed_targets, autoencoder=autoencoder)
    except (OSError, ValueError) as error:  # "checkpoint not found: …" alone did not say which of the two
        raise ValueError(f"guide={guide}: {error}") from error


def refuse_a_prediction_type_the_formulation_fixes(
    wanted: Mapping[str, Any], formulation: Any, where: str
) -> None:
    """prediction_type chooses what a vp network predicts and schedule= its noise table; an edm or flow network's
    target and noise levels are fixed by its formulation, so the prediction_type and schedule its config holds
    (the defaults) mean nothing. Before, asking for prediction_type=v said it contradicted that epsilon."""
    if formulation is None or formulation.name == "vp":
        return
    asked = wanted.get("prediction_type")
    if asked is not None:
        raise ValueError(
            f"prediction_type={asked} does not apply to {where}: it was trained with formulation="
            f"{formulation.name}, whose network's target is fixed by the formulation; drop prediction_type="
        )
    # Before, schedule=cosine "contradicted" the unused schedule its config holds, and schedule=linear was taken.
    if any(key.startswith("schedule.") for key in wanted):
        raise ValueError(
            f"schedule= does not apply to {where}: it was trained with formulation={formulation.name}, which "
            "builds its own noise levels; drop schedule="
        )
