"""A diffusers pipeline folder read as a difflab model, for difflab.load and sample.py ckpt=<folder>: what
`export.py format=diffusers` writes (unet/ UNet2DModel with a DDPM-family scheduler, or EDMEulerScheduler /
FlowMatchEulerDiscreteScheduler for edm / flow; a DiTPipeline's transformer/ DiTTransformer2DModel; a latent
model's vae/ beside them), or any
UNet2DModel of difflab's architecture (the DDPM U-Net, e.g. google/ddpm-cifar10-32). Only JSON and the weights
(safetensors, or a .bin read weights-only) are read; the config made here is held to the allowlist like a
checkpoint's."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..diffusion.formulations import EDM, Flow
from ..diffusion.formulations.zero_snr import terminal_betas
from ..io.diffusers_kinds import foreign_network
from ..listing import listed
from ..models import DiT, UNet
from .diffusers_autoencoder import autoencoder_arguments, is_autoencoder_folder
from .diffusers_folder import (
    class_name,
    config_with_defaults,
    read_unet_config,
    read_unet_weights,
    read_weights,
    require_diffusers,
)
from .diffusers_mapping import (
    PREDICTION_TYPES,
    UNET_TARGET,
    architecture_differences,
    arguments_from_diffusers,
    from_diffusers,
)
from .diffusers_schedulers import scheduler_differences
from .dit_mapping import DIT_TARGET, dit_arguments_from_diffusers, dit_from_diffusers, is_conditional
from .state_fit import state_mismatch

SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
# The schedulers export.py writes for an edm or flow model, and the formulation each samples.
FORMULATIONS = {"EDMEulerScheduler": EDM, "FlowMatchEulerDiscreteScheduler": Flow}
# An edm or flow checkpoint keeps the schedule group of its config, which they never read.
UNUSED_SCHEDULE = {
    "_target_": "difflab.diffusion.NoiseSchedule.from_name",
    "name": "linear",
    "timesteps": 1000,
}
T = TypeVar("T")
VAE = "vae"  # a latent model's autoencoder, as export.py writes it beside the denoiser
# diffusers' prediction types as difflab names them.
DIFFLAB_PREDICTION_TYPES = {theirs: ours for ours, theirs in PREDICTION_TYPES.items()}


def is_diffusers_pipeline(path: str | Path) -> bool:
    """Whether `path` is a diffusers pipeline folder: model_index.json, or a UNet2DModel in unet/ (export.py's
    edm and flow folders have no model_index.json)."""
    folder = Path(path)
    return (folder / "model_index.json").is_file() or class_name(
        folder / "unet" / "config.json"
    ) == "UNet2DModel"


def read_diffusers_pipeline(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str, int]:
    """(difflab config, network weights under difflab's names, which weights, training step) of a pipeline
    folder, as read_model_folder gives them (see exported_weights); a one-line error naming what does not map."""
    folder, named = Path(path), f"diffusers folder {path}"
    latent = is_autoencoder_folder(folder / VAE)
    if not latent:
        refuse_latent(folder, named)  # one that lists a vae/ it does not hold
    model, state = (read_unet if network_of(folder, named) == "unet" else read_dit)(folder, named)
    config = {
        "model": model,
        **read_scheduler(folder, named, latent),
        "data": {
            "channels": model["in_channels"],
            "image_size": model["image_size"],
            "condition": None if model["num_classes"] is None else "labels",
        },
    }
    if latent:  # export.py's folder of a latent model: decoded through its vae/ (before, refused)
        config["autoencoder"] = str(folder / VAE)
        config["data"].update(decoded_data(folder / VAE, model, named))
    if model["num_classes"] is not None and (names := exported_class_folders(folder / SCHEDULER_CONFIG)):
        config["data"]["class_folders"] = names  # so labels= takes the class names here too
    weights, step = exported_weights(folder / SCHEDULER_CONFIG)
    return config, state, weights, step


def check_pipeline_configs(folder: Path) -> None:
    """What read_diffusers_pipeline refuses that the configs alone show, before any weights are there (a Hub
    model is fetched configs first)."""
    named = f"diffusers folder {folder}"
    refuse_latent(folder, named, on_the_hub=True)
    if network_of(folder, named) == "unet":
        unet_arguments_of(folder, named)
    else:
        with_dit_errors(named, lambda: dit_arguments_from_diffusers(dit_config_of(folder, named), True))
    read_scheduler(folder, named)


def decoded_data(vae: Path, model: dict[str, Any], named: str) -> dict[str, int]:
    """The images a latent model's vae/ decodes its denoiser's latents to (channels, image_size); a one-line error
    where the two do not fit."""
    args = autoencoder_arguments(json.loads((vae / "config.json").read_text()), f"{named}: its vae/")
    if int(args["latent_channels"]) != int(model["in_channels"]):
        raise ValueError(
            f"{named}: its denoiser takes {model['in_channels']} channels but its vae/ makes latents of "
            f"{args['latent_channels']}"
        )
    down_factor = 2 ** (len(args["block_out_channels"]) - 1)
    return {"channels": int(args["in_channels"]), "image_size": int(model["image_size"]) * down_factor}


def refuse_latent(folder: Path, named: str, on_the_hub: bool = False) -> None:
    """A latent model's net makes latents: read without its autoencoder, it would draw them as images. Called
    where the folder holds no readable vae/, and for a Hub model, whose vae/ is not fetched."""
    index = folder / "model_index.json"
    try:
        listed = json.loads(index.read_text()).get("vae") if index.is_file() else None
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{named}: cannot read model_index.json ({error})") from error
    if (folder / "vae").is_dir() or (isinstance(listed, list) and any(listed)):
        where = (
            "read from a local folder only (the Hub's vae/ is not fetched)"
            if on_the_hub
            else "read with the diffusers AutoencoderKL in its vae/ (config.json and weights, as export.py writes "
            "it), which this folder lacks"
        )
        raise ValueError(f"{named} is a latent diffusion pipeline (it names a vae/): one is {where}")


def network_of(folder: Path, named: str) -> str:
    """ "unet" (a UNet2DModel in unet/) or "dit" (a DiTTransformer2DModel in transformer/)."""
    if class_name(folder / "unet" / "config.json") == "UNet2DModel":
        return "unet"
    if class_name(folder / "transformer" / "config.json") == "DiTTransformer2DModel":
        return "dit"
    # Before, a Stable Diffusion pipeline's UNet2DConditionModel went unnamed.
    foreign = foreign_network(folder)
    if foreign:
        raise ValueError(f"{named}: {foreign}")
    raise ValueError(
        f"{named} holds neither a UNet2DModel in unet/ nor a DiTTransformer2DModel in transformer/: difflab "
        "reads diffusers folders of its own networks"
    )


def unet_arguments_of(folder: Path, named: str) -> dict[str, Any]:
    """The difflab U-Net arguments of the UNet2DModel config in folder/unet, refused unless its architecture is
    difflab's."""
    theirs = read_unet_config(folder, named)
    try:
        args = arguments_from_diffusers(theirs)
    except ValueError as error:
        raise ValueError(f"{named}: its UNet2DModel is not difflab's U-Net: {error}") from error
    differences = architecture_differences(args, theirs)
    if differences:
        raise ValueError(f"{named}: its UNet2DModel is not difflab's U-Net: {listed(differences, 3)}")
    return args


def read_unet(folder: Path, named: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config, difflab U-Net weights) of the UNet2DModel in folder/unet."""
    args = unet_arguments_of(folder, named)
    with torch.device("meta"):
        expected = UNet(**args).state_dict()
    try:
        state = from_diffusers(expected, read_unet_weights(folder, named=named))
    except ValueError as error:
        raise ValueError(error if str(error).startswith(named) else f"{named}: {error}") from error
    return {"_target_": UNET_TARGET, **args}, state


def dit_config_of(folder: Path, named: str) -> dict[str, Any]:
    """The DiTTransformer2DModel config in folder/transformer, diffusers' defaults filled in."""
    return config_with_defaults(require_diffusers(named).DiTTransformer2DModel, folder / "transformer")


def with_dit_errors(named: str, read: Callable[[], T]) -> T:
    """read(), its errors said as one line about the folder's DiTTransformer2DModel."""
    try:
        return read()
    except KeyError as missing:
        raise ValueError(f"{named}: its DiTTransformer2DModel weights lack {missing}") from None
    except ValueError as error:
        raise ValueError(f"{named}: its DiTTransformer2DModel is not difflab's DiT: {error}") from error


def read_dit(folder: Path, named: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config, difflab DiT weights) of the DiTTransformer2DModel in folder/transformer."""
    theirs_config = dit_config_of(folder, named)
    theirs = read_weights(folder / "transformer", named)
    args = with_dit_errors(
        named, lambda: dit_arguments_from_diffusers(theirs_config, is_conditional(theirs_config, theirs))
    )
    state = with_dit_errors(named, lambda: dit_from_diffusers(theirs, args))
    with torch.device("meta"):
        expected = DiT(**args).state_dict()
    problem = state_mismatch(expected, state)
    if problem:
        raise ValueError(f"{named}: its DiTTransformer2DModel weights do not fit difflab's DiT: {problem}")
    return {"_target_": DIT_TARGET, **args}, state


def read_scheduler(path: Path, named: str, latent: bool = False) -> dict[str, Any]:
    """The config keys the folder's scheduler gives (schedule, prediction_type, and formulation for edm/flow),
    or a one-line error for a scheduler difflab cannot sample as. `latent`: the folder's denoiser makes latents."""
    file = path / SCHEDULER_CONFIG
    try:
        stored = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{named}: cannot read {SCHEDULER_CONFIG} ({error}): the noise schedule is needed"
        ) from error
    name = str(stored.get("_class_name"))
    scheduler_class = getattr(require_diffusers(named), name, None)
    scheduler = scheduler_class.from_config(stored) if scheduler_class is not None else None
    if name in FORMULATIONS:
        return {
            "schedule": UNUSED_SCHEDULE,
            "prediction_type": "epsilon",
            "formulation": formulation_of(scheduler, name, named) | difflab_settings(stored),
        }
    if not isinstance(getattr(scheduler, "betas", None), torch.Tensor):
        raise ValueError(
            f"{named}: its scheduler {name} is neither a DDPM-family scheduler (a table of betas) nor one of "
            f"{', '.join(FORMULATIONS)}"
        )
    predicts = scheduler.config.get("prediction_type", "epsilon")
    if predicts not in DIFFLAB_PREDICTION_TYPES:
        raise ValueError(
            f"{named}: prediction_type={predicts} is not one of {', '.join(DIFFLAB_PREDICTION_TYPES)}"
        )
    # trained_betas as written (export.py writes difflab's exact float64 table), else the table diffusers builds.
    trained = stored.get("trained_betas")
    betas = [float(b) for b in trained] if trained else scheduler.betas.double().tolist()
    if (
        betas[-1] >= 1.0
    ):  # rescale_betas_zero_snr: ᾱ_T = 0 exactly, which no table can hold; set as difflab's is
        alphas_cumprod = torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), 0)
        betas = terminal_betas(alphas_cumprod).tolist()
    warn_of_sampling_settings(scheduler.config, named, latent)
    return {
        "schedule": {"_target_": "difflab.diffusion.NoiseSchedule", "betas": betas, "name": "diffusers"},
        "prediction_type": DIFFLAB_PREDICTION_TYPES[predicts],
    }


def warn_of_sampling_settings(config: Any, named: str, latent: bool) -> None:
    """Name the scheduler's sampling-time settings difflab's samplers do not take from a folder where they differ
    from difflab's own: its clipping of x0 (difflab's is sampler.clip_x0: 1.0 by default for pixels, none for
    latents, which have no [-1, 1] range) and dynamic thresholding (none in difflab)."""
    found = []
    if config.get("thresholding"):
        found.append(
            "thresholding=true (dynamic thresholding: not in difflab; x0 is clipped by sampler.clip_x0)"
        )
    clip, limit = config.get("clip_sample", True), float(config.get("clip_sample_range", 1.0))
    if latent:  # before, clip_sample=false, as export.py writes a latent model, was named on every load
        if clip:
            found.append(f"clip_sample=true (give sampler.clip_x0={limit:g} to clip latents as it does)")
    elif not clip:
        found.append("clip_sample=false (give sampler.clip_x0=null to sample without clipping, as it does)")
    elif limit != 1.0:
        found.append(f"clip_sample_range={limit:g} (give sampler.clip_x0={limit:g} to clip as it does)")
    if found:
        warnings.warn(f"{named}: its scheduler samples with {'; '.join(found)}", stacklevel=2)


def exported_weights(file: Path) -> tuple[str, int]:
    """(which weights, training step) that difflab's export recorded in the scheduler config `file`: ("ema" or
    "raw", the checkpoint's step); ("diffusers", 0) for a folder difflab did not write (or values not its own)."""
    stored = json.loads(file.read_text())
    weights, step = stored.get("_difflab_weights"), stored.get("_difflab_global_step")
    if weights in ("ema", "raw") and isinstance(step, int) and not isinstance(step, bool) and step >= 0:
        return weights, step
    return "diffusers", 0


def exported_class_folders(file: Path) -> list[str] | None:
    """The class folders difflab's export recorded for a labelled folder model (diffusers has no setting for them);
    None when there are none, or they are not a list of names."""
    names = json.loads(file.read_text()).get("_difflab_class_folders")
    return (
        list(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) and names else None
    )


def difflab_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """What difflab's export kept beside a scheduler's own settings (flow's t_max: where its grid starts)."""
    return {"t_max": float(stored["_difflab_t_max"])} if "_difflab_t_max" in stored else {}


def formulation_of(scheduler: Any, name: str, named: str) -> dict[str, Any]:
    """The edm or flow formulation config whose sampling math is the scheduler's (compared on numbers, as
    export.py compares before writing); the rest of it (training only) keeps difflab's defaults, and flow's t_max is
    read by difflab_settings."""
    config = scheduler.config
    if name == "EDMEulerScheduler":
        values = {key: float(config[key]) for key in ("sigma_data", "sigma_min", "sigma_max", "rho")}
        # EDM's F is diffusers' "epsilon"; "v_prediction" is another preconditioning.
        if config.get("prediction_type") != "epsilon":
            raise ValueError(
                f"{named}: EDMEulerScheduler prediction_type={config.get('prediction_type')}; difflab's edm "
                "predicts F (epsilon)"
            )
    else:
        if config.get("use_dynamic_shifting"):
            raise ValueError(
                f"{named}: FlowMatchEulerDiscreteScheduler use_dynamic_shifting=true (a shift that depends on the "
                "image size) has no difflab counterpart; difflab's flow has one shift"
            )
        values = {"shift": float(config.get("shift", 1.0))}
    kind = FORMULATIONS[name]
    formulation = {"_target_": f"difflab.diffusion.formulations.{kind.__name__}", **values}
    differences = scheduler_differences(kind(**values), scheduler)
    if differences:
        raise ValueError(
            f"{named}: its {name} computes {', '.join(differences)} otherwise than difflab's {kind.name}"
        )
    return formulation
