"""Read a difflab checkpoint and rebuild its denoiser and schedule from the config stored inside."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from ..callbacks.run_config import CONFIG_KEY
from ..diffusion import NoiseSchedule


@dataclass
class LoadedModel:
    """A denoiser with its schedule and the settings it was trained with."""

    net: nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    config: dict[str, Any]
    weights: str  # "ema" or "raw"
    global_step: int

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        data = self.config["data"]
        return (int(data["channels"]), int(data["image_size"]), int(data["image_size"]))


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU, with one-line errors for missing, corrupt or foreign files.

    mmap=True maps the tensors instead of reading them: cheap when only the config or counters are needed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        except Exception:
            if not mmap:
                raise
            # Not a zip archive (a legacy or a damaged file): a plain load says which, or reads the legacy one.
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for truncated or non-checkpoint files
        raise ValueError(f"could not read checkpoint {path}: {type(error).__name__}: {error}") from error
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    if CONFIG_KEY not in ckpt:
        raise ValueError(f"{path} has no stored difflab config; was it written by difflab's train.py?")
    return ckpt


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the denoiser from the checkpoint's config and load its (EMA, when present) weights."""
    ckpt = read_checkpoint(path)
    config = ckpt[CONFIG_KEY]
    net = instantiate(OmegaConf.create(config["model"]))
    schedule = instantiate(OmegaConf.create(config["schedule"]))
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"checkpoint {path} does not match its stored model config: {first}") from error
    net.to(device).eval()
    # WeightAveraging stores the averaged weights as state_dict and the raw ones beside them.
    weights = "ema" if "current_model_state" in ckpt else "raw"
    return LoadedModel(
        net,
        schedule,
        config.get("prediction_type", "epsilon"),
        config,
        weights,
        int(ckpt.get("global_step", 0)),
    )
