"""difflab's DiT ↔ diffusers' `DiTTransformer2DModel`: the config and the weights, both ways.

The networks compute the same function; the layouts differ. difflab computes q, k, v with one Linear to 3D
(diffusers: to_q, to_k, to_v) and embeds time and class once per forward, where diffusers gives every block
its own copy of the embedders (transformer_blocks.i.norm1.emb; the output layer reads block 0's), so the one
embedder is copied into every block. diffusers encodes t as [cos | sin], difflab as [sin | cos]: the first
Linear's input columns swap halves. diffusers always has a class table; an unconditional DiT maps to a
one-class table of zeros (its embedding adds nothing). diffusers is imported only where a folder is written;
reading one back takes block 0's embedders (every block must hold the same) and the other half-swap.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

DIT_TARGET = "difflab.models.DiT"
EPS = 1e-6  # difflab.models.dit_block.EPS, every LayerNorm of the block


def dit_arguments(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The DiT's constructor arguments from a stored `model` config, defaults filled in."""
    from ..models import DiT

    if model_config.get("_target_") != DIT_TARGET:
        raise ValueError(f"not a {DIT_TARGET} (this model is {model_config.get('_target_')})")
    defaults = {
        name: p.default
        for name, p in inspect.signature(DiT.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    args = {**defaults, **{k: v for k, v in model_config.items() if k != "_target_"}}
    if args["out_channels"] is None:
        args["out_channels"] = args["in_channels"]
    return args


def dit_refusal(args: Mapping[str, Any]) -> str | None:
    """Why this DiT has no DiTTransformer2DModel counterpart, or None when it has one."""
    if args.get("text_dim"):
        return "a text-conditional DiT (cross-attention) has no DiTTransformer2DModel counterpart"
    if args.get("cond_channels"):
        return "a DiT that concatenates a low-resolution image (super-resolution) has no DiTTransformer2DModel counterpart"
    if args.get("pos_embed") != "sincos":
        return "a learned position embedding has no DiTTransformer2DModel counterpart (it recomputes sin-cos)"
    if float(args["mlp_ratio"]) != 4.0:
        return f"mlp_ratio {args['mlp_ratio']}: DiTTransformer2DModel's MLP is 4× wide"
    return None


def diffusers_dit_config(args: Mapping[str, Any]) -> dict[str, Any]:
    """DiTTransformer2DModel's constructor arguments for a difflab DiT's."""
    refusal = dit_refusal(args)
    if refusal:
        raise ValueError(refusal)
    return {
        "num_attention_heads": int(args["num_heads"]),
        "attention_head_dim": int(args["hidden_size"]) // int(args["num_heads"]),
        "in_channels": int(args["in_channels"]),
        "out_channels": int(args["out_channels"]),
        "num_layers": int(args["depth"]),
        "sample_size": int(args["image_size"]),
        "patch_size": int(args["patch_size"]),
        "num_embeds_ada_norm": int(args["num_classes"] or 1),
        "norm_eps": EPS,
        "dropout": float(args.get("dropout") or 0.0),  # a training setting: sampling (eval) ignores it
    }


def dit_to_diffusers(state: Mapping[str, Tensor], args: Mapping[str, Any]) -> dict[str, Tensor]:
    """A difflab DiT state dict renamed and reshaped into DiTTransformer2DModel's."""
    width, depth = int(args["hidden_size"]), int(args["depth"])
    t1 = state["time_embed.mlp.0.weight"]
    half = t1.shape[1] // 2
    embedders = {
        "timestep_embedder.linear_1.weight": torch.cat([t1[:, half:], t1[:, :half]], dim=1),
        "timestep_embedder.linear_1.bias": state["time_embed.mlp.0.bias"],
        "timestep_embedder.linear_2.weight": state["time_embed.mlp.2.weight"],
        "timestep_embedder.linear_2.bias": state["time_embed.mlp.2.bias"],
        "class_embedder.embedding_table.weight": state.get(
            "class_embed.weight", torch.zeros(2, width, dtype=t1.dtype)
        ),
    }
    out = {
        "pos_embed.proj.weight": state["patch_embed.weight"],
        "pos_embed.proj.bias": state["patch_embed.bias"],
        "proj_out_1.weight": state["final.modulation.weight"],
        "proj_out_1.bias": state["final.modulation.bias"],
        "proj_out_2.weight": state["final.linear.weight"],
        "proj_out_2.bias": state["final.linear.bias"],
    }
    for i in range(depth):
        ours, theirs = f"blocks.{i}.", f"transformer_blocks.{i}."
        for name, value in embedders.items():
            out[f"{theirs}norm1.emb.{name}"] = value.clone()
        for kind in ("weight", "bias"):
            q, k, v = state[f"{ours}attn.qkv.{kind}"].chunk(3, dim=0)
            out |= {
                f"{theirs}attn1.to_q.{kind}": q,
                f"{theirs}attn1.to_k.{kind}": k,
                f"{theirs}attn1.to_v.{kind}": v,
            }
            out[f"{theirs}attn1.to_out.0.{kind}"] = state[f"{ours}attn.proj.{kind}"]
            out[f"{theirs}norm1.linear.{kind}"] = state[f"{ours}modulation.{kind}"]
            out[f"{theirs}ff.net.0.proj.{kind}"] = state[f"{ours}mlp.0.{kind}"]
            out[f"{theirs}ff.net.2.{kind}"] = state[f"{ours}mlp.2.{kind}"]
    return {name: value.contiguous() for name, value in out.items()}


def diffusers_dit(state: Mapping[str, Tensor], args: Mapping[str, Any]) -> Any:
    """A DiTTransformer2DModel holding a difflab DiT's weights (diffusers imported here only)."""
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(**diffusers_dit_config(args))
    model.load_state_dict(dit_to_diffusers(state, args), strict=True)
    return model.eval()


# DiTTransformer2DModel settings difflab's DiT has one way only (diffusers_dit_config writes these).
FIXED_SETTINGS = {
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "upcast_attention": False,
    "norm_type": "ada_norm_zero",
    "norm_elementwise_affine": False,
    "norm_eps": EPS,
}
_EMBEDDERS = "transformer_blocks.{}.norm1.emb."


def dit_arguments_from_diffusers(theirs: Mapping[str, Any], conditional: bool) -> dict[str, Any]:
    """The DiT's arguments for a DiTTransformer2DModel config (`conditional`: whether its class table is used);
    a one-line error for what difflab's DiT has no way to be."""
    channels = int(theirs["in_channels"])
    out = int(theirs.get("out_channels") or channels)
    if out != channels:
        raise ValueError(
            f"out_channels {out} is not in_channels {channels} (a DiT that also predicts its variance): difflab's "
            "DiT predicts one tensor of its input's shape"
        )
    other = [
        f"{key}={theirs.get(key)}" for key, ours in FIXED_SETTINGS.items() if theirs.get(key, ours) != ours
    ]
    if other:
        fixed = ", ".join(f"{key}={value}" for key, value in FIXED_SETTINGS.items())
        raise ValueError(f"{', '.join(other)}: difflab's DiT has {fixed}")
    heads = int(theirs["num_attention_heads"])
    return dit_arguments(
        {
            "_target_": DIT_TARGET,
            "in_channels": channels,
            "out_channels": out,
            "image_size": int(theirs["sample_size"]),
            "patch_size": int(theirs["patch_size"]),
            "hidden_size": heads * int(theirs["attention_head_dim"]),
            "depth": int(theirs["num_layers"]),
            "num_heads": heads,
            "num_classes": int(theirs["num_embeds_ada_norm"]) if conditional else None,
            "dropout": float(theirs.get("dropout") or 0.0),
        }
    )


def is_conditional(theirs_config: Mapping[str, Any], theirs: Mapping[str, Tensor]) -> bool:
    """Whether a DiTTransformer2DModel's class table is used: dit_to_diffusers writes an unconditional DiT as one
    class of zeros."""
    table = theirs[_EMBEDDERS.format(0) + "class_embedder.embedding_table.weight"]
    return not (int(theirs_config.get("num_embeds_ada_norm") or 1) == 1 and not bool(table.any()))


def dit_from_diffusers(theirs: Mapping[str, Tensor], args: Mapping[str, Any]) -> dict[str, Tensor]:
    """A difflab DiT state dict (of the DiT built with `args`) from DiTTransformer2DModel weights: dit_to_diffusers
    read backwards; a one-line error when its blocks embed time or class each their own way."""
    first = _EMBEDDERS.format(0)
    embedders = {name[len(first) :]: value for name, value in theirs.items() if name.startswith(first)}
    for i in range(1, int(args["depth"])):
        block = _EMBEDDERS.format(i)
        if any(not torch.equal(theirs[block + name], value) for name, value in embedders.items()):
            raise ValueError(
                f"block {i} embeds time and class otherwise than block 0; difflab's DiT has one embedder"
            )
    t1 = embedders["timestep_embedder.linear_1.weight"]
    half = t1.shape[1] // 2
    out = {
        "patch_embed.weight": theirs["pos_embed.proj.weight"],
        "patch_embed.bias": theirs["pos_embed.proj.bias"],
        "final.modulation.weight": theirs["proj_out_1.weight"],
        "final.modulation.bias": theirs["proj_out_1.bias"],
        "final.linear.weight": theirs["proj_out_2.weight"],
        "final.linear.bias": theirs["proj_out_2.bias"],
        # diffusers' [cos | sin] time features back to difflab's [sin | cos]
        "time_embed.mlp.0.weight": torch.cat([t1[:, half:], t1[:, :half]], dim=1),
        "time_embed.mlp.0.bias": embedders["timestep_embedder.linear_1.bias"],
        "time_embed.mlp.2.weight": embedders["timestep_embedder.linear_2.weight"],
        "time_embed.mlp.2.bias": embedders["timestep_embedder.linear_2.bias"],
    }
    if args.get("num_classes") is not None:
        out["class_embed.weight"] = embedders["class_embedder.embedding_table.weight"]
    for i in range(int(args["depth"])):
        ours, block = f"blocks.{i}.", f"transformer_blocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [theirs[f"{block}attn1.to_{part}.{kind}"] for part in "qkv"]
            out[f"{ours}attn.qkv.{kind}"] = torch.cat(qkv, dim=0)
            out[f"{ours}attn.proj.{kind}"] = theirs[f"{block}attn1.to_out.0.{kind}"]
            out[f"{ours}modulation.{kind}"] = theirs[f"{block}norm1.linear.{kind}"]
            out[f"{ours}mlp.0.{kind}"] = theirs[f"{block}ff.net.0.proj.{kind}"]
            out[f"{ours}mlp.2.{kind}"] = theirs[f"{block}ff.net.2.{kind}"]
    return out
