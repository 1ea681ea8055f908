"""sample(cfg): generate images from a checkpoint with any sampler and write PNGs, a grid and an .npz."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..diffusion.generate import generate
from ..io.images import save_samples
from .checkpoint import LoadedModel, load_model

log = logging.getLogger("difflab")

MODES = ("sample", "inpaint", "img2img")

# Keys a user may pass to sample.py only to check them against the checkpoint (null: take the checkpoint's).
CHECKED_KEYS = {
    "image_size": ("data", "image_size"),
    "channels": ("data", "channels"),
    "prediction_type": ("prediction_type",),
}


def pick_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _stored(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        config = config.get(key, {}) if isinstance(config, dict) else {}
    return config if config != {} else None


def check_against_checkpoint(cfg: DictConfig, loaded: LoadedModel) -> None:
    """Overrides that contradict the stored model are errors: the checkpoint fixes the model."""
    stored = loaded.config
    for key, path in CHECKED_KEYS.items():
        wanted = cfg.get(key)
        if wanted is not None and wanted != _stored(stored, path):
            raise ValueError(
                f"{key}={wanted} contradicts the checkpoint, trained with {key}={_stored(stored, path)}; "
                f"drop the override (sample.py takes it from the checkpoint)"
            )
    for group in ("model", "schedule"):
        wanted = cfg.get(group)
        if wanted is None:
            continue
        # Values that interpolate other groups (model.in_channels: ${data.channels}) are not compared.
        for key, value in OmegaConf.to_container(wanted, resolve=False).items():
            if key.startswith("_") or (isinstance(value, str) and value.startswith("${")):
                continue
            if stored[group].get(key) != value:
                raise ValueError(
                    f"{group}.{key}={value} contradicts the checkpoint, trained with "
                    f"{group}.{key}={stored[group].get(key)}; drop the override (the checkpoint fixes the {group})"
                )


def prepare_out_dir(out: str | Path) -> Path:
    """The output folder, created; an existing non-empty folder is refused, never overwritten."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output folder {out} already exists and is not empty; choose another out=")
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_sampler(cfg: DictConfig, loaded: LoadedModel):
    """The configured sampler (a partial) bound to the checkpoint's schedule and prediction type."""
    return instantiate(cfg.sampler)(loaded.schedule, prediction_type=loaded.prediction_type)


def sample(cfg: DictConfig) -> Path:
    """Write cfg.n samples from checkpoint cfg.ckpt to cfg.out (default: the run folder's samples/).

    cfg.mode = inpaint or img2img edits the pictures in cfg.image instead (see run/edit.py).
    """
    mode = cfg.get("mode", "sample")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "sample":
        from .edit import edit  # imported here: edit.py reuses this module's helpers

        return edit(cfg)
    if int(cfg.n) < 1:
        raise ValueError(f"n must be at least 1 (got {cfg.n})")
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    device = pick_device(cfg.device)
    loaded = load_model(cfg.ckpt, device)
    check_against_checkpoint(cfg, loaded)
    sampler = build_sampler(cfg, loaded)
    out = prepare_out_dir(cfg.out or Path(cfg.paths.output_dir) / "samples")

    log.info(
        "sampling %d images with %r (%s weights, step %d)", cfg.n, sampler, loaded.weights, loaded.global_step
    )
    images = generate(sampler, loaded.net, range(int(cfg.n)), loaded.sample_shape, cfg.seed, cfg.batch_size)
    written = save_samples(images, out)
    settings = {
        "ckpt": str(cfg.ckpt),
        "n": int(cfg.n),
        "seed": int(cfg.seed),
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "nfe": sampler.nfe,
        "weights": loaded.weights,
        "global_step": loaded.global_step,
    }
    (out / "settings.json").write_text(json.dumps(settings, indent=2))
    log.info(
        "wrote %d PNGs to %s, the grid %s and %s", cfg.n, written["images"], written["grid"], written["npz"]
    )
    return out
