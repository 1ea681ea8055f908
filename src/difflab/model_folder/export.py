"""A loaded checkpoint's model written as a diffusers pipeline folder or a safetensors + JSON folder: planned (every
refusal made) before the output folder exists, then written, with the one line that says how to load it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .diffusers_autoencoder import to_diffusers_autoencoder
from .diffusers_folder import (
    add_scheduler_keys,
    ddpm_scheduler,
    require_diffusers,
    write_pipeline,
    write_unet_and_scheduler,
)
from .diffusers_mapping import diffusers_config, unet_arguments
from .diffusers_schedulers import diffusers_refusal, formulation_scheduler
from .dit_folder import write_dit_pipeline
from .dit_mapping import DIT_TARGET, diffusers_dit_config, dit_arguments
from .file_modes import as_new_files
from .safetensors_folder import write_model_folder

FORMATS = ("diffusers", "safetensors")


@dataclass(frozen=True)
class ExportPlan:
    """What export writes: the format and, for diffusers, the net's mapped arguments, the scheduler of an edm or
    flow model (None: a vp model's DDPM pipeline) and a latent model's autoencoder as a diffusers AutoencoderKL."""

    format: str
    args: dict[str, Any] | None = None
    scheduler: Any = None
    is_dit: bool = False
    vae: Any = None


def plan_export(loaded: Any, ckpt: str, format: str) -> ExportPlan:
    """How `loaded` (a checkpoint.LoadedModel) is exported in `format`; a one-line ValueError for what cannot be."""
    if loaded.latents is not None and format != "diffusers":  # it would lose the autoencoder
        refusal = _why_diffusers_refuses(loaded, ckpt)
        if refusal:
            # Pointing at format=diffusers would send the user to a second refusal.
            raise ValueError(
                f"{ckpt} is a latent diffusion model that no export format holds yet: format={format} cannot hold "
                f"its autoencoder, and {refusal}; sample it from its checkpoint (sample.py ckpt={ckpt}, or "
                "difflab.load)"
            )
        raise ValueError(
            f"{ckpt} is a latent diffusion model: format={format} cannot hold its autoencoder "
            "yet; export it with format=diffusers (the autoencoder as vae/)"
        )
    if format != "diffusers":
        return ExportPlan(format)
    diffusers = require_diffusers("format=diffusers")
    name = getattr(loaded.formulation, "name", "vp")
    scheduler = None if name == "vp" else formulation_scheduler(diffusers, loaded.formulation)
    model = loaded.config.get("model") or {}
    if name == "vp" and loaded.latents is not None and model.get("_target_") != DIT_TARGET:
        # No pipeline of diffusers decodes a UNet2DModel's latents: a DDPMPipeline folder would load and return
        # undecoded latents as images. unet/, scheduler/ and vae/ are written for the user's own loop.
        scheduler = ddpm_scheduler(loaded.schedule, loaded.prediction_type, latent=True)
    try:
        refusal = diffusers_refusal(loaded.formulation, scheduler)
        if refusal:
            # format=safetensors holds any pixel model; a latent one it refuses (see above).
            instead = "" if loaded.latents is not None else "; export it with format=safetensors"
            raise ValueError(refusal + instead)
        is_dit = model.get("_target_") == DIT_TARGET
        if is_dit and scheduler is not None:  # DiTPipeline is a DDPM/DDIM (vp) pipeline only
            raise ValueError(f"a formulation={name} model has no DDPMScheduler for diffusers' DiTPipeline")
        args = dit_arguments(model) if is_dit else unet_arguments(model)
        (diffusers_dit_config if is_dit else diffusers_config)(args)
        vae = None
        if loaded.latents is not None:
            latents = loaded.latents
            autoencoder = latents.autoencoder
            vae = to_diffusers_autoencoder(
                autoencoder.net, autoencoder.config["model"], latents.scale_factor, latents.image_shape[-1]
            )
    except ValueError as error:
        raise ValueError(f"cannot export {ckpt} to diffusers: {error}") from error
    return ExportPlan(format, args, scheduler, is_dit, vae)


def _why_diffusers_refuses(loaded: Any, ckpt: str) -> str | None:
    """Why format=diffusers cannot hold the latent model `loaded` either (None: it can). Its network's mapping,
    which needs no diffusers, is asked first: a model no format holds is told so whether diffusers is installed or
    not, and one that format=diffusers holds is told to install it."""
    model = loaded.config.get("model") or {}
    is_dit = model.get("_target_") == DIT_TARGET
    try:
        args = (dit_arguments if is_dit else unet_arguments)(model)
        (diffusers_dit_config if is_dit else diffusers_config)(args)
    except ValueError as error:
        return f"cannot export {ckpt} to diffusers: {error}"
    require_diffusers("format=diffusers (the format that holds a latent model's autoencoder)")
    try:
        plan_export(loaded, ckpt, "diffusers")
    except ValueError as error:
        return str(error)
    return None


def write_export(loaded: Any, plan: ExportPlan, out: Path) -> str:
    """Write `loaded` into the folder `out` as `plan` says; returns how a user loads it."""
    if (
        plan.vae is not None and not plan.is_dit
    ):  # DiTPipeline holds it; a U-Net's pipeline has no place for one
        plan.vae.save_pretrained(out / "vae", safe_serialization=True)
    if plan.format == "diffusers" and plan.scheduler is not None:
        write_unet_and_scheduler(loaded.net, plan.args, plan.scheduler, out)
        labels = "(x, t, class_labels=…)" if loaded.num_classes is not None else ""
        how = f"UNet2DModel{labels} and {type(plan.scheduler).__name__}.from_pretrained(out, subfolder=...) in your own loop"
    elif plan.format == "diffusers" and plan.is_dit:
        write_dit_pipeline(loaded.net, plan.args, loaded.schedule, loaded.prediction_type, out, plan.vae)
        # DiTTransformer2DModel always embeds a class: an unconditional DiT is one class, 0, which must be passed
        labels = (
            "class_labels=…"
            if loaded.num_classes is not None
            else "class_labels=0 for every image: one class"
        )
        how = f"DiTPipeline.from_pretrained(out, vae=None): its transformer ({labels}) and scheduler (see README)"
        if plan.vae is not None:  # a latent DiT: the pipeline is whole
            labels = (
                "class_labels=[…]" if loaded.num_classes is not None else "class_labels=[0] * n: one class"
            )
            how = f"DiTPipeline.from_pretrained(out) ({labels}; see README)"
    elif plan.format == "diffusers":
        write_pipeline(loaded.net, plan.args, loaded.schedule, loaded.prediction_type, out)
        how = "DDPMPipeline.from_pretrained (or DDIMPipeline)"
        if loaded.num_classes is not None:
            how = "UNet2DModel(x, t, class_labels=…) in your own loop; DDPMPipeline passes no labels (see README)"
    else:
        write_model_folder(loaded, out)
        how = "difflab.load or sample.py ckpt="
    if plan.format == "diffusers":
        add_scheduler_keys(out, difflab_record(loaded))
    as_new_files(out)
    if plan.vae is not None and not plan.is_dit:
        how += "; its autoencoder: vae/ (AutoencoderKL: decode latents / vae.config.scaling_factor)"
    return how


def difflab_record(loaded: Any) -> dict[str, Any]:
    """What difflab reads back from a diffusers folder it wrote and diffusers has no setting for: the training
    step and which weights (ema or raw) were exported, flow's t_max (its grid starts there) and a labelled folder
    model's class folders."""
    record = {"_difflab_global_step": loaded.global_step, "_difflab_weights": loaded.weights}
    if getattr(loaded.formulation, "name", None) == "flow":
        record["_difflab_t_max"] = loaded.formulation.t_max
    if names := (loaded.config.get("data") or {}).get("class_folders"):
        record["_difflab_class_folders"] = list(names)  # labels= by name, as on the checkpoint
    return record
