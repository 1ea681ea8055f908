"""Write a difflab model as a diffusers DDPM pipeline folder, and read a diffusers UNet2DModel folder back into a
difflab U-Net (fine-tuning from diffusers weights)."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..diffusion import NoiseSchedule
from ..listing import listed
from ..models import UNet
from .diffusers_mapping import (
    architecture_differences,
    diffusers_config,
    from_diffusers,
    scheduler_config,
    to_diffusers,
)

log = logging.getLogger("difflab")


def require_diffusers(purpose: str) -> ModuleType:
    """The diffusers package, or a one-line error saying how to get it."""
    try:
        import diffusers
    except ImportError as error:
        raise ValueError(
            f"{purpose} needs the diffusers package: pip install 'difflab[diffusers]' (or pip install diffusers)"
        ) from error
    return diffusers


def write_pipeline(
    net: nn.Module, args: Mapping[str, Any], schedule: NoiseSchedule, prediction_type: str, out: Path
) -> None:
    """A DDPMPipeline folder (model_index.json, unet/, scheduler/; safetensors) holding `net`'s weights.

    `args` are the U-Net's constructor arguments (see unet_arguments); `out` must exist and be empty.
    """
    diffusers = require_diffusers("format=diffusers")
    config = diffusers_config(args)  # refuses what UNet2DModel cannot express, before any work
    unet = diffusers.UNet2DModel(**config)
    unet.load_state_dict(to_diffusers({k: v.detach().cpu().float() for k, v in net.state_dict().items()}))
    scheduler = ddpm_scheduler(schedule, prediction_type)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out, safe_serialization=True)


def ddpm_scheduler(schedule: NoiseSchedule, prediction_type: str, latent: bool = False) -> Any:
    """diffusers' DDPMScheduler of difflab's table (trained_betas: its float64 betas) and prediction type (x̂_0 not
    clipped for a `latent` model)."""
    return require_diffusers("format=diffusers").DDPMScheduler(
        **scheduler_config(schedule.betas, prediction_type, latent)
    )


def write_unet_and_scheduler(net: nn.Module, args: Mapping[str, Any], scheduler: Any, out: Path) -> None:
    """unet/ (UNet2DModel, safetensors) and scheduler/ folders for a model whose sampling diffusers has as a
    scheduler but no pipeline (edm, flow): each loads with its class's from_pretrained(out, subfolder=...)."""
    diffusers = require_diffusers("format=diffusers")
    unet = diffusers.UNet2DModel(**diffusers_config(args))
    unet.load_state_dict(to_diffusers({k: v.detach().cpu().float() for k, v in net.state_dict().items()}))
    unet.save_pretrained(out / "unet", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")


def add_scheduler_keys(out: Path, keys: Mapping[str, Any]) -> None:
    """Add "_"-prefixed `keys` to the scheduler config of the pipeline folder `out`: diffusers keeps and ignores
    keys that start with "_" (as its own _class_name), and difflab reads them back."""
    file = out / "scheduler" / "scheduler_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **keys}, indent=2))


def unet_folder(folder: str | Path, named: str | None = None) -> Path:
    """The UNet2DModel folder inside `folder`: the folder itself, or its unet/ (a whole pipeline folder).
    `named`: how errors name the folder (default: init_from=<folder>)."""
    folder = Path(folder)
    named = named or f"init_from={folder}"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{named}: no such file or folder (give a difflab checkpoint, run folder or safetensors export, or a "
            "diffusers UNet2DModel folder)"
        )
    for candidate in (folder, folder / "unet"):
        config = candidate / "config.json"
        if config.is_file() and class_name(config) == "UNet2DModel":
            return candidate
    raise ValueError(
        f"{named} holds no diffusers UNet2DModel (config.json with _class_name UNet2DModel, here or in unet/)"
    )


def class_name(path: Path) -> str | None:
    """The _class_name a diffusers config.json names (None where there is no such file, or it names none); a
    file there that is not a JSON object is one line naming it (a truncated copy, a hand edit gone wrong), not
    taken for a folder of another kind."""
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read as a diffusers config ({error})") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} cannot be read as a diffusers config (it holds no JSON object)")
    return config.get("_class_name")


def read_unet_config(folder: str | Path, named: str | None = None) -> dict[str, Any]:
    """The folder's UNet2DModel config with diffusers' defaults filled in (for keys older files omit)."""
    diffusers = require_diffusers(named or "init_from")
    return config_with_defaults(diffusers.UNet2DModel, unet_folder(folder, named))


def config_with_defaults(model_class: type, path: Path) -> dict[str, Any]:
    """The config.json of a diffusers model folder with the class's defaults filled in (for keys older files omit),
    without diffusers' own _-keys."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(model_class.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    stored = model_class.load_config(path)
    return {**defaults, **{k: v for k, v in stored.items() if not k.startswith("_")}}


# Old diffusers files name an attention block's projections as the deprecated AttentionBlock did; diffusers
# renames them on load (ModelMixin._fix_state_dict_keys_on_load), and so does read_unet_weights.
_DEPRECATED_ATTENTION = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _current_name(name: str) -> str:
    if ".attentions." in name:
        for old, new in _DEPRECATED_ATTENTION.items():
            if old in name:
                return name.replace(old, new)
    return name


def read_unet_weights(
    folder: str | Path, shapes_only: bool = False, named: str | None = None
) -> dict[str, torch.Tensor]:
    """The UNet2DModel weights in `folder` as data (safetensors, or a .bin read weights-only), under diffusers'
    current names; with `shapes_only` as meta tensors from the file's header (nothing read but the header).
    A missing, damaged or cut-short file is a one-line error."""
    state = read_weights(unet_folder(folder, named), named or f"init_from={folder}", shapes_only)
    return {_current_name(key): value for key, value in state.items()}


def read_weights(path: Path, named: str, shapes_only: bool = False) -> dict[str, torch.Tensor]:
    """The weights file of the diffusers model folder `path` as data (see read_unet_weights); errors start with
    `named`."""
    found = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{named}: no weights file ({' or '.join(WEIGHT_FILES)}) in {path}")
    try:
        if found.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(found), "pt") as file:
                state = {
                    key: torch.empty(file.get_slice(key).get_shape(), device="meta")
                    if shapes_only
                    else file.get_tensor(key)
                    for key in file.keys()  # noqa: SIM118 (safe_open is no dict)
                }
        else:
            state = torch.load(found, map_location="meta" if shapes_only else "cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise several types for damaged files
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{named}: cannot read {found.name}, it is damaged or cut short ({detail})"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{named}: {found.name} holds no state dict of tensors")
    return state


def check_unet_config(args: Mapping[str, Any], folder: str | Path, named: str | None = None) -> None:
    """A one-line error unless the diffusers U-Net in `folder` has the architecture of the difflab U-Net built
    with `args` (config.json only: what a Hub model is checked by before its weights are fetched)."""
    differences = architecture_differences(args, read_unet_config(folder, named))
    if differences:
        raise ValueError(
            f"{named or f'init_from={folder}'} does not match the configured model: {listed(differences, 4)}; "
            "choose a model= "
            "whose architecture is the diffusers one"
        )


def check_unet_folder(args: Mapping[str, Any], folder: str | Path) -> None:
    """A one-line error unless the diffusers U-Net in `folder` has the architecture of the difflab U-Net built
    with `args` and its weights file holds exactly the weights that architecture needs (config.json and the
    weights file's header are read; no weights are loaded)."""
    check_unet_config(args, folder)
    with torch.device("meta"):
        expected = UNet(**args).state_dict()
    try:
        from_diffusers(expected, read_unet_weights(folder, shapes_only=True))
    except ValueError as error:
        if str(error).startswith("init_from="):
            raise
        raise ValueError(f"init_from={folder}: {error}") from error


def load_unet_folder(net: nn.Module, args: Mapping[str, Any], folder: str | Path) -> None:
    """Load the diffusers UNet2DModel weights in `folder` into the difflab U-Net `net` (built with `args`)."""
    check_unet_folder(args, folder)
    with torch.no_grad():
        net.load_state_dict(from_diffusers(net.state_dict(), read_unet_weights(folder)))
    log.info("initialised the U-Net from the diffusers weights in %s", folder)
