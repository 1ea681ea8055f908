"""difflab's U-Net ↔ diffusers' `UNet2DModel`: the config and the weight names, both ways.

The two networks are the same DDPM U-Net: difflab's level i is diffusers' (Attn)DownBlock2D i, its up levels
are the (Attn)UpBlock2D in the same order, Res–Attn–Res in the middle is UNetMidBlock2D. Only names and two
layouts differ: difflab's attention computes q, k, v with one 1x1 conv to 3C (diffusers: three Linear C→C)
and projects with a 1x1 conv (diffusers: Linear). diffusers itself is imported only where a folder is read
or written, so the mapping is usable (and testable) without it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

UNET_TARGET = "difflab.models.UNet"
NORM_EPS = 1e-6  # difflab.models.norm.group_norm
# difflab's prediction types as diffusers' schedulers name them.
PREDICTION_TYPES = {"epsilon": "epsilon", "x0": "sample", "v": "v_prediction"}

# difflab name prefix → diffusers name prefix (regex groups carry the level and block numbers).
_PREFIXES = [
    (r"time_embed\.mlp\.0\.", "time_embedding.linear_1."),
    (r"time_embed\.mlp\.2\.", "time_embedding.linear_2."),
    (r"class_embed\.", "class_embedding."),
    (r"down\.(\d+)\.blocks\.(\d+)\.res\.", r"down_blocks.\1.resnets.\2."),
    (r"down\.(\d+)\.blocks\.(\d+)\.attn\.", r"down_blocks.\1.attentions.\2."),
    (r"down\.(\d+)\.resample\.", r"down_blocks.\1.downsamplers.0."),
    (r"mid\.0\.res\.", "mid_block.resnets.0."),
    (r"mid\.0\.attn\.", "mid_block.attentions.0."),
    (r"mid\.1\.", "mid_block.resnets.1."),
    (r"up\.(\d+)\.blocks\.(\d+)\.res\.", r"up_blocks.\1.resnets.\2."),
    (r"up\.(\d+)\.blocks\.(\d+)\.attn\.", r"up_blocks.\1.attentions.\2."),
    (r"up\.(\d+)\.resample\.", r"up_blocks.\1.upsamplers.0."),
    (r"norm_out\.", "conv_norm_out."),
    (r"(conv_in|conv_out)\.", r"\1."),
]
# Inside a residual block / an attention block: difflab's part name → diffusers' part name.
_RESNET_PARTS = {"emb_proj.1": "time_emb_proj", "shortcut": "conv_shortcut"}
_ATTENTION_PARTS = {"norm": "group_norm", "proj": "to_out.0"}
_QKV = ("to_q", "to_k", "to_v")


# --- configs --------------------------------------------------------------------------------------------------


def unet_arguments(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The difflab UNet's constructor arguments from a stored `model` config, defaults filled in; a one-line
    error for any other network class."""
    from ..models import UNet

    target = model_config.get("_target_")
    if target != UNET_TARGET:
        raise ValueError(f"only {UNET_TARGET} maps to diffusers' UNet2DModel (this model is {target})")
    defaults = {
        name: p.default
        for name, p in inspect.signature(UNet.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(model_config) - set(defaults) - {"_target_"})
    if unknown:
        raise ValueError(f"the model config has arguments the U-Net does not take: {', '.join(unknown)}")
    args = {**defaults, **{k: v for k, v in model_config.items() if k != "_target_"}}
    if args["out_channels"] is None:
        args["out_channels"] = args["in_channels"]
    args["channel_mults"] = [int(m) for m in args["channel_mults"]]
    args["attention_resolutions"] = [int(r) for r in args["attention_resolutions"]]
    return args


def diffusers_config(args: Mapping[str, Any]) -> dict[str, Any]:
    """The UNet2DModel config of the difflab U-Net built with `args`; a one-line error naming why when diffusers'
    UNet2DModel cannot express it."""
    if args.get("text_dim") is not None:
        raise ValueError(
            "a text-conditional U-Net (cross-attention to text states) has no diffusers UNet2DModel counterpart"
        )
    if args.get("cond_channels"):
        raise ValueError(
            "a U-Net that concatenates a low-resolution image (cond_channels, super-resolution) does not fit "
            "diffusers' unconditional DDPM/DDIM pipelines"
        )
    mults, base = args["channel_mults"], int(args["base_channels"])
    if mults[0] != 1:
        raise ValueError(
            f"channel_mults starts with {mults[0]}: diffusers' UNet2DModel sizes its input conv and time "
            "embedding by the first level's width, difflab by base_channels; only channel_mults [1, …] map"
        )
    widths = [base * m for m in mults]
    resolutions = [int(args["image_size"]) // 2**i for i in range(len(mults))]
    attends = [r in args["attention_resolutions"] for r in resolutions]
    return {
        "sample_size": int(args["image_size"]),
        "in_channels": int(args["in_channels"]),
        "out_channels": int(args["out_channels"]),
        "block_out_channels": widths,
        "layers_per_block": int(args["num_res_blocks"]),
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "attention_head_dim": _head_dim(
            int(args["num_heads"]), [w for w, a in zip(widths, attends, strict=True) if a], widths
        ),
        "norm_num_groups": int(args["num_groups"]),
        "norm_eps": NORM_EPS,
        "dropout": float(args["dropout"]),
        # difflab's sinusoidal embedding: [sin | cos], frequencies exp(-ln(10⁴)·i/(half-1)).
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "downsample_padding": int(args["downsample_padding"]),
        "resnet_time_scale_shift": "default",
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        # A label embedding added to the time embedding; its extra last row is difflab's "no label" (CFG).
        "num_class_embeds": None if args.get("num_classes") is None else int(args["num_classes"]) + 1,
    }


def arguments_from_diffusers(theirs: Mapping[str, Any]) -> dict[str, Any]:
    """The difflab U-Net arguments a UNet2DModel config (defaults filled in) reads as: diffusers_config read
    backwards. Whether the rest of the architecture matches is architecture_differences' question; a one-line
    error here for widths or heads difflab's layout cannot take."""
    channels, out = int(theirs["in_channels"]), int(theirs["out_channels"])
    if out != channels:
        # Before, it loaded and the first sampler step fed the 2-channel output back in as the next input.
        raise ValueError(
            f"out_channels {out} is not in_channels {channels} (a U-Net that also predicts its variance, for a "
            "scheduler's variance_type=learned_range): difflab's U-Net predicts one tensor of its input's shape"
        )
    widths = [int(w) for w in theirs["block_out_channels"]]
    base, size = widths[0], theirs["sample_size"]
    if any(w % base for w in widths):
        raise ValueError(
            f"block_out_channels={widths} are not multiples of the first: difflab's U-Net widths are "
            "base_channels × channel_mults"
        )
    if not isinstance(size, int):
        raise ValueError(f"sample_size={size}: difflab's U-Net takes square images (one whole number)")
    attends = [kind.startswith("Attn") for kind in theirs["down_block_types"]]
    dim = theirs.get("attention_head_dim")
    heads = {w // (dim or w) for w, a in zip(widths, attends, strict=True) if a} | {
        widths[-1] // (dim or widths[-1])
    }
    if len(heads) > 1:
        raise ValueError(
            f"attention_head_dim={dim} gives {sorted(heads)} heads at different levels; difflab's U-Net has one "
            "num_heads for every attention block"
        )
    classes = theirs.get("num_class_embeds")
    return unet_arguments(
        {
            "_target_": UNET_TARGET,
            "in_channels": int(theirs["in_channels"]),
            "out_channels": int(theirs["out_channels"]),
            "base_channels": base,
            "channel_mults": [w // base for w in widths],
            "num_res_blocks": int(theirs["layers_per_block"]),
            "attention_resolutions": [size // 2**i for i, a in enumerate(attends) if a],
            "image_size": size,
            "dropout": float(theirs.get("dropout") or 0.0),
            "num_heads": heads.pop(),
            "num_groups": int(theirs["norm_num_groups"]),
            # diffusers_config's extra last row is difflab's "no label" (CFG): num_classes is one fewer.
            "num_classes": None if classes is None else int(classes) - 1,
            "downsample_padding": int(theirs["downsample_padding"]),
        }
    )


def _head_dim(num_heads: int, attention_widths: list[int], widths: list[int]) -> int | None:
    """diffusers fixes the width of a head, difflab the number of heads: one head maps to None (every block
    one head); more map only when every attention block (the levels' and the middle's) has the same head width."""
    if num_heads == 1:
        return None
    dims = {w // num_heads for w in [*attention_widths, widths[-1]]}
    if len(dims) > 1:
        raise ValueError(
            f"num_heads={num_heads} gives heads of {sorted(dims)} channels at different levels; diffusers' "
            "UNet2DModel has one attention_head_dim for all (use num_heads=1 or equal widths where it attends)"
        )
    return dims.pop()


# What decides the architecture (dropout and sample_size do not), compared on import.
ARCHITECTURE_KEYS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "norm_num_groups",
    "norm_eps",
    "flip_sin_to_cos",
    "freq_shift",
    "downsample_padding",
    "resnet_time_scale_shift",
    "mid_block_scale_factor",
    "act_fn",
    "num_class_embeds",
)


def architecture_differences(args: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """`key=theirs (difflab: ours)` for each architectural setting of a diffusers UNet2DModel config (defaults
    filled in) that the difflab U-Net built with `args` does not share."""
    ours = diffusers_config(args)
    found = [
        f"{key}={_plain(theirs.get(key))} (difflab model: {_plain(ours[key])})"
        for key in ARCHITECTURE_KEYS
        if _plain(theirs.get(key)) != _plain(ours[key])
    ]
    for key, expected in {
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "time_embedding_dim": None,
        "class_embed_type": None,
        "mid_block_type": "UNetMidBlock2D",
        "add_attention": True,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "attn_norm_num_groups": None,
    }.items():
        if theirs.get(key, expected) != expected:
            found.append(f"{key}={theirs.get(key)} (difflab has no such option)")
    heads = _heads(ours)
    if not found and _heads(theirs) != heads:
        found.append(f"attention_head_dim={theirs.get('attention_head_dim')} (difflab model: heads {heads})")
    return found


def _heads(config: Mapping[str, Any]) -> list[int]:
    """Heads of every attention block, as UNet2DModel derives them from attention_head_dim."""
    widths, dim = list(config["block_out_channels"]), config.get("attention_head_dim")
    attending = [
        w for w, kind in zip(widths, config["down_block_types"], strict=True) if kind.startswith("Attn")
    ]
    return [w // (dim or w) for w in [*attending, widths[-1]]]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


# --- weights --------------------------------------------------------------------------------------------------


def diffusers_name(name: str) -> str:
    """The diffusers name of one difflab U-Net parameter (an attention's fused qkv keeps `qkv`: it is split)."""
    for pattern, replacement in _PREFIXES:
        match = re.match(pattern, name)
        if match:
            prefix, rest = match.expand(replacement), name[match.end() :]
            parts = _ATTENTION_PARTS if ".attentions." in prefix else _RESNET_PARTS
            for ours, theirs in parts.items():
                if rest.startswith(ours + "."):
                    rest = theirs + rest[len(ours) :]
            return prefix + rest
    raise ValueError(f"no diffusers name for the U-Net parameter {name}")


def to_diffusers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A difflab U-Net state dict renamed and reshaped as UNet2DModel's."""
    out: dict[str, Tensor] = {}
    for name, value in state.items():
        theirs = diffusers_name(name)
        if ".qkv." in theirs:
            # (3C, C, 1, 1) conv → three (C, C) Linear: rows [q | k | v], each split into heads the same way.
            for part, chunk in zip(_QKV, value.chunk(3), strict=True):
                out[theirs.replace(".qkv.", f".{part}.")] = _linear(chunk)
        elif ".to_out.0." in theirs:
            out[theirs] = _linear(value)
        else:
            out[theirs] = value
    return {k: v.contiguous() for k, v in out.items()}


def from_diffusers(expected: Mapping[str, Tensor], theirs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict of a difflab U-Net whose own state is `expected`, taken from UNet2DModel weights `theirs`;
    a one-line error naming missing, unexpected or wrongly shaped weights."""
    from .state_fit import state_mismatch

    out, used = {}, set()
    for name, like in expected.items():
        key = diffusers_name(name)
        if ".qkv." in key:
            keys = [key.replace(".qkv.", f".{part}.") for part in _QKV]
            if all(k in theirs for k in keys):
                joined = torch.cat([theirs[k] for k in keys])
                # A size that does not fit stays as it is, for state_mismatch to name (before: torch's reshape
                # error, naming no weight).
                out[name] = joined.reshape(like.shape) if joined.numel() == like.numel() else joined
                used.update(keys)
        elif key in theirs:
            value = theirs[key]
            out[name] = (
                value.reshape(like.shape) if ".to_out.0." in key and value.numel() == like.numel() else value
            )
            used.add(key)
    problem = state_mismatch(expected, out)
    extra = sorted(set(theirs) - used)
    if problem or extra:
        unexpected = f"{len(extra)} diffusers weights difflab has no place for: {', '.join(extra[:3])}"
        raise ValueError(
            f"the diffusers weights do not fit the difflab U-Net: {'; '.join(filter(None, [problem, unexpected if extra else None]))}"
        )
    return out


def _linear(weight: Tensor) -> Tensor:
    """A 1x1 conv's weight (O, I, 1, 1) as a Linear's (O, I); biases pass unchanged."""
    return weight.reshape(weight.shape[0], -1) if weight.ndim == 4 else weight


# --- the scheduler --------------------------------------------------------------------------------------------


def scheduler_config(betas: Tensor, prediction_type: str, latent: bool = False) -> dict[str, Any]:
    """DDPMScheduler arguments for difflab's schedule: its exact betas, prediction type, and sample.py's x̂_0
    clipping (conf/sampler/*.yaml clip_x0: auto: to [-1, 1] for pixels, none for a `latent` model) with the
    posterior variance DDPM uses (fixed_small)."""
    return {
        "num_train_timesteps": int(betas.numel()),
        "trained_betas": [float(b) for b in betas],
        "prediction_type": PREDICTION_TYPES[prediction_type],
        "clip_sample": not latent,
        "clip_sample_range": 1.0,
        "variance_type": "fixed_small",
        "timestep_spacing": "leading",
    }
