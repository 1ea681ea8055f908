"""export(cfg): write a checkpoint's model as a diffusers pipeline folder or a safetensors + JSON folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ..checkpoint import load_model
from ..io.results import output_folder
from ..model_folder.diffusers_folder import require_diffusers, write_pipeline, write_unet_and_scheduler
from ..model_folder.diffusers_mapping import diffusers_config, unet_arguments
from ..model_folder.diffusers_schedulers import formulation_scheduler
from ..model_folder.dit_folder import write_dit_pipeline
from ..model_folder.dit_mapping import DIT_TARGET, diffusers_dit_config, dit_arguments
from ..model_folder.file_modes import as_new_files
from ..model_folder.safetensors_folder import write_model_folder
from .formulation_checks import diffusers_refusal
from .rules import require

log = logging.getLogger("difflab")

FORMATS = ("diffusers", "safetensors")


@dataclass(frozen=True)
class ExportSettings:
    """export.py's config, read and checked once."""

    ckpt: str
    format: str
    out: str | None
    root_dir: str
    allowed_targets: tuple[str, ...]


def read_settings(cfg: DictConfig) -> ExportSettings:
    """export.py's config: a checkpoint is required, the format is one of FORMATS."""
    ckpt = require(
        cfg,
        "ckpt",
        "export.py needs ckpt=<checkpoint>, e.g. ckpt=outputs/train/<date>/<time>/checkpoints/last.ckpt",
    )
    if cfg.format not in FORMATS:
        raise ValueError(f"unknown format={cfg.format}; choose one of {', '.join(FORMATS)}")
    return ExportSettings(ckpt, cfg.format, cfg.out, str(cfg.paths.root_dir), tuple(cfg.allowed_targets))


def export(cfg: DictConfig) -> Path:
    """Export checkpoint cfg.ckpt in cfg.format to cfg.out (default: a new outputs/export/<date>/<time>)."""
    settings = read_settings(cfg)
    loaded = load_model(settings.ckpt, "cpu", settings.allowed_targets)
    if loaded.latents is not None:  # the export would lose the autoencoder and scale factor its samples need
        raise ValueError(
            f"{settings.ckpt} is a latent diffusion model: exporting it (with its autoencoder) is not supported yet; "
            "sample its checkpoint"
        )
    if settings.format == "diffusers":
        # Everything that can refuse does so before the output folder is made.
        diffusers = require_diffusers("format=diffusers")
        name = getattr(loaded.formulation, "name", "vp")
        scheduler = None if name == "vp" else formulation_scheduler(diffusers, loaded.formulation)
        try:
            refusal = diffusers_refusal(loaded.formulation, scheduler)
            if refusal:
                raise ValueError(refusal)
            model = loaded.config.get("model") or {}
            is_dit = model.get("_target_") == DIT_TARGET
            if is_dit and scheduler is not None:  # DiTPipeline is a DDPM/DDIM (vp) pipeline only
                raise ValueError(
                    f"a formulation={name} model has no DDPMScheduler for diffusers' DiTPipeline"
                )
            args = dit_arguments(model) if is_dit else unet_arguments(model)
            (diffusers_dit_config if is_dit else diffusers_config)(args)
        except ValueError as error:
            raise ValueError(f"cannot export {settings.ckpt} to diffusers: {error}") from error
    with output_folder(settings.out, "export", settings.root_dir) as out:
        if settings.format == "diffusers" and scheduler is not None:
            write_unet_and_scheduler(loaded.net, args, scheduler, out)
            labels = "(x, t, class_labels=…)" if loaded.num_classes is not None else ""
            how = f"UNet2DModel{labels} and {type(scheduler).__name__}.from_pretrained(out, subfolder=...) in your own loop"
        elif settings.format == "diffusers":
            write = write_dit_pipeline if is_dit else write_pipeline
            write(loaded.net, args, loaded.schedule, loaded.prediction_type, out)
            how = "DDPMPipeline.from_pretrained (or DDIMPipeline)"
            if is_dit:
                how = "DiTPipeline.from_pretrained(out, vae=None): its transformer and scheduler (see README)"
            elif loaded.num_classes is not None:
                how = "UNet2DModel(x, t, class_labels=…) in your own loop; DDPMPipeline passes no labels (see README)"
        else:
            write_model_folder(loaded, out)
            how = "difflab.load or sample.py ckpt="
        as_new_files(out)
    log.info(
        "exported %s (%s weights, step %d) to %s: load it with %s",
        settings.ckpt,
        loaded.weights,
        loaded.global_step,
        out,
        how,
    )
    return out
