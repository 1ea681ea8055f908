"""export(cfg): write a checkpoint's model as a diffusers pipeline folder or a safetensors + JSON folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ..autoencoder_checkpoint import is_autoencoder
from ..checkpoint import load_model
from ..io.atomic import NoSpaceLeft, is_out_of_space
from ..io.results import output_folder
from ..model_folder.export import FORMATS, plan_export, write_export
from .errors import exit_if_stopped
from .rules import require

log = logging.getLogger("difflab")


@dataclass(frozen=True)
class ExportSettings:
    """export.py's config, read and checked once."""

    ckpt: str
    format: str
    out: str | None
    root_dir: str
    allowed_targets: tuple[str, ...]
    autoencoder: str | None = None  # a latent checkpoint's autoencoder moved elsewhere (same hash)


def read_settings(cfg: DictConfig) -> ExportSettings:
    """export.py's config: a checkpoint is required, the format is one of FORMATS."""
    ckpt = require(
        cfg,
        "ckpt",
        "export.py needs ckpt=<checkpoint>, e.g. ckpt=outputs/train/<date>/<time>/checkpoints/last.ckpt",
    )
    if cfg.format not in FORMATS:
        raise ValueError(f"unknown format={cfg.format}; choose one of {', '.join(FORMATS)}")
    return ExportSettings(
        ckpt, cfg.format, cfg.out, str(cfg.paths.root_dir), tuple(cfg.allowed_targets), cfg.autoencoder
    )


def export(cfg: DictConfig) -> Path:
    """Export checkpoint cfg.ckpt in cfg.format to cfg.out (default: a new outputs/export/<date>/<time>)."""
    settings = read_settings(cfg)
    # Before, load_model's "it cannot sample or edit", beside the point here.
    if is_autoencoder(settings.ckpt):
        raise ValueError(
            f"{settings.ckpt} is an autoencoder (task=autoencoder): export.py exports diffusion models; a latent "
            "diffusion model trained on it exports it with itself (format=diffusers: its vae/ folder)"
        )
    loaded = load_model(settings.ckpt, "cpu", settings.allowed_targets, autoencoder=settings.autoencoder)
    plan = plan_export(loaded, settings.ckpt, settings.format)  # every refusal before the folder is made
    with exit_if_stopped("export.py"), output_folder(settings.out, "export", settings.root_dir) as folder:
        out = folder.path
        try:
            how = write_export(loaded, plan, out)
        except Exception as error:
            if is_out_of_space(error):  # the folder and what it holds go (output_folder), so nothing partial
                raise NoSpaceLeft(out) from error
            raise
    log.info(
        "exported %s (%s weights, step %d) to %s: load it with %s",
        settings.ckpt,
        loaded.weights,
        loaded.global_step,
        out,
        how,
    )
    return out
