"""export(cfg): write a checkpoint's model as a diffusers pipeline folder or a safetensors + JSON folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ..checkpoint import load_model
from ..io.results import output_folder
from ..model_folder.diffusers_autoencoder import to_diffusers_autoencoder
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
    if loaded.latents is not None and settings.format != "diffusers":  # it would lose the autoencoder
        raise ValueError(
            f"{settings.ckpt} is a latent diffusion model: format={settings.format} cannot hold its autoencoder "
            "yet; export it with format=diffusers (the autoencoder as vae/)"
        )
    vae = None
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
            if loaded.latents is not None:
                latents = loaded.latents
                vae = to_diffusers_autoencoder(
                    latents.autoencoder.net,
                    latents.autoencoder.config["model"],
                    latents.scale_factor,
                    latents.image_shape[-1],
                )
        except ValueError as error:
            raise ValueError(f"cannot export {settings.ckpt} to diffusers: {error}") from error
    with output_folder(settings.out, "export", settings.root_dir) as out:
        if vae is not None and not is_dit:  # DiTPipeline holds it; a U-Net's pipeline has no place for one
            vae.save_pretrained(out / "vae", safe_serialization=True)
        if settings.format == "diffusers" and scheduler is not None:
            write_unet_and_scheduler(loaded.net, args, scheduler, out)
            labels = "(x, t, class_labels=…)" if loaded.num_classes is not None else ""
            how = f"UNet2DModel{labels} and {type(scheduler).__name__}.from_pretrained(out, subfolder=...) in your own loop"
        elif settings.format == "diffusers":
            if is_dit:
                write_dit_pipeline(loaded.net, args, loaded.schedule, loaded.prediction_type, out, vae)
                how = "DiTPipeline.from_pretrained(out, vae=None): its transformer and scheduler (see README)"
                if vae is not None:  # a latent DiT: the pipeline is whole
                    how = "DiTPipeline.from_pretrained(out) (see README)"
            else:
                write_pipeline(loaded.net, args, loaded.schedule, loaded.prediction_type, out)
                how = "DDPMPipeline.from_pretrained (or DDIMPipeline)"
                if loaded.num_classes is not None:
                    how = "UNet2DModel(x, t, class_labels=…) in your own loop; DDPMPipeline passes no labels (see README)"
        else:
            write_model_folder(loaded, out)
            how = "difflab.load or sample.py ckpt="
        as_new_files(out)
    if vae is not None and not is_dit:
        how += "; its autoencoder: vae/ (AutoencoderKL: decode latents / vae.config.scaling_factor)"
    log.info(
        "exported %s (%s weights, step %d) to %s: load it with %s",
        settings.ckpt,
        loaded.weights,
        loaded.global_step,
        out,
        how,
    )
    return out
