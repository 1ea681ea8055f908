"""Read a diffusers AutoencoderKL folder (Stable Diffusion's VAE format: config.json and
diffusion_pytorch_model.safetensors) into difflab's AutoencoderKL: the same layers under the same names, so the
weights are copied as they are. Needs no diffusers install. And the way back: a latent model's autoencoder as a
diffusers AutoencoderKL (export.py's vae/ folder)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from ..models.autoencoder import AutoencoderKL
from .state_fit import state_mismatch

WEIGHTS = "diffusion_pytorch_model.safetensors"
# What difflab's autoencoder is; a folder asking for anything else is refused rather than loaded wrongly.
SUPPORTED = {
    "act_fn": "silu",
    "mid_block_add_attention": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
}


def is_autoencoder_folder(path: str | Path) -> bool:
    """Whether `path` is a folder whose config.json names diffusers' AutoencoderKL."""
    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text()).get("_class_name") == "AutoencoderKL"
    except (OSError, ValueError, AttributeError):
        return False


def autoencoder_arguments(config: dict[str, Any], source: str) -> dict[str, Any]:
    """AutoencoderKL's constructor arguments from a diffusers config; a one-line error for what it cannot express."""
    differences = [
        f"{key}={config[key]!r}" for key, value in SUPPORTED.items() if key in config and config[key] != value
    ]
    levels = len(config.get("block_out_channels", ()))
    if (
        set(config.get("down_block_types", ())) != {"DownEncoderBlock2D"}
        or len(config["down_block_types"]) != levels
    ):
        differences.append(f"down_block_types={config.get('down_block_types')}")
    if (
        set(config.get("up_block_types", ())) != {"UpDecoderBlock2D"}
        or len(config["up_block_types"]) != levels
    ):
        differences.append(f"up_block_types={config.get('up_block_types')}")
    if differences:
        raise ValueError(f"{source}: difflab's AutoencoderKL cannot express {', '.join(differences)}")
    return {
        "in_channels": int(config.get("in_channels", 3)),
        "out_channels": int(config.get("out_channels", 3)),
        "latent_channels": int(config.get("latent_channels", 4)),
        "block_out_channels": [int(width) for width in config["block_out_channels"]],
        "layers_per_block": int(config.get("layers_per_block", 1)),
        "norm_num_groups": int(config.get("norm_num_groups", 32)),
        "scaling_factor": float(config.get("scaling_factor", 0.18215)),
    }


def load_autoencoder_folder(folder: str | Path) -> tuple[AutoencoderKL, dict[str, Any]]:
    """(the autoencoder with the folder's weights, its constructor arguments); one-line errors for a missing,
    foreign or damaged folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    source = f"autoencoder folder {folder}"
    if not is_autoencoder_folder(folder):
        raise ValueError(
            f"{source} holds no diffusers AutoencoderKL (config.json with _class_name AutoencoderKL)"
        )
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{source}: no {WEIGHTS}")
    args = autoencoder_arguments(json.loads((folder / "config.json").read_text()), source)
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as error:  # safetensors raises several types for damaged files
        raise ValueError(f"{source}: cannot read {WEIGHTS}, it is damaged or cut short ({error})") from error
    net = AutoencoderKL(**args)
    problem = state_mismatch(net.state_dict(), state)
    if problem:
        raise ValueError(f"{source}: its weights do not match its config.json: {problem}")
    with torch.no_grad():
        net.load_state_dict(state)
    return net.eval(), args


def diffusers_autoencoder_config(
    model: dict[str, Any], scaling_factor: float, sample_size: int
) -> dict[str, Any]:
    """diffusers AutoencoderKL's config for difflab's autoencoder built from the stored config `model` (the
    inverse of autoencoder_arguments), its scaling_factor the latent scale a pipeline divides latents by."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(AutoencoderKL).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    args = {**defaults, **{key: value for key, value in model.items() if key in defaults}}
    levels = len(args["block_out_channels"])
    return {
        "in_channels": int(args["in_channels"]),
        "out_channels": int(args["out_channels"] or args["in_channels"]),
        "latent_channels": int(args["latent_channels"]),
        "block_out_channels": [int(width) for width in args["block_out_channels"]],
        "layers_per_block": int(args["layers_per_block"]),
        "norm_num_groups": int(args["norm_num_groups"]),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "scaling_factor": float(scaling_factor),
        "sample_size": int(sample_size),
    }


def to_diffusers_autoencoder(
    net: torch.nn.Module, model_config: dict, scale_factor: float, image_size: int
) -> Any:
    """difflab's autoencoder `net` (built from `model_config`) as a diffusers AutoencoderKL (the same names: weights
    copied as they are), its scaling_factor a latent model's scale factor: what a pipeline's vae/ folder holds."""
    import diffusers

    config = diffusers_autoencoder_config(model_config, scale_factor, image_size)
    vae = diffusers.AutoencoderKL(**config)
    vae.load_state_dict({k: v.detach().cpu().float() for k, v in net.state_dict().items()})
    return vae.eval()
