"""What a denoiser does with its inputs before its layers: timesteps spread over the batch, labels with the
"no label" row where dropped, the low-resolution image of super-resolution checked. The same `model(x, t, cond)`
contract for every network (see difflab.diffusion.conditioning for the keys of `cond`)."""

from collections.abc import Callable

import torch
from torch import Tensor, nn


def check_conditioning_arguments(num_classes: int | None, text_dim: int | None, cond_channels: int) -> None:
    """A net's conditioning arguments, each a one-line ValueError when it cannot be built."""
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be a positive number of classes or None (got {num_classes})")
    if text_dim is not None and text_dim < 1:
        raise ValueError(f"text_dim must be the text encoder's width or None (got {text_dim})")
    if cond_channels < 0:
        raise ValueError(f"cond_channels must be 0 or more (got {cond_channels})")


def batch_timesteps(t: Tensor | float, x: Tensor) -> Tensor:
    """t as a (N,) tensor on x's device, a scalar or single timestep broadcast to the batch."""
    t = torch.as_tensor(t, device=x.device)
    n = x.shape[0]
    if t.numel() == 1:
        return t.reshape(1).expand(n)
    if t.shape != (n,):
        raise ValueError(f"timesteps t must be a scalar or have shape ({n},) (got {tuple(t.shape)})")
    return t


def labels_or_null(cond: dict[str, Tensor], num_classes: int, x: Tensor) -> Tensor:
    """The class of each sample; the extra row num_classes ("no label") where none is given or it is dropped."""
    null = torch.full((x.shape[0],), num_classes, dtype=torch.long, device=x.device)
    labels = cond.get("labels")
    if labels is None:
        return null
    return torch.where(cond["drop"], null, labels) if "drop" in cond else labels


def low_res_input(cond: dict[str, Tensor], channels: int, x: Tensor, net: str) -> Tensor:
    """cond["low_res"], checked to be (N, channels, H, W) like x, in x's dtype (SR3 concatenates it to x)."""
    low = cond.get("low_res")
    expected = (x.shape[0], channels, *x.shape[2:])
    if low is None or tuple(low.shape) != expected:
        got = None if low is None else tuple(low.shape)
        raise ValueError(f"this {net} concatenates a low-resolution image of shape {expected} (got {got})")
    return low.to(x.dtype)


def check_input(x: Tensor, in_channels: int, net: str) -> None:
    """x must be (N, in_channels, H, W): one line naming the shape otherwise."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{net} expects input (N, {in_channels}, H, W) with in_channels={in_channels} "
            f"(got shape {tuple(x.shape)})"
        )


def add_conditions(
    emb: Tensor,
    cond: dict[str, Tensor],
    x: Tensor,
    net: str,
    class_embed: nn.Module | None,
    num_classes: int | None,
    text_embed: Callable[..., tuple[Tensor, Tensor, Tensor]] | None,
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """The time embedding plus the label's and the pooled text's, and the text context (token states, mask) for
    cross-attention (None without text); a condition the net was not built for is one line."""
    if class_embed is not None:
        emb = emb + class_embed(labels_or_null(cond, num_classes, x))
    elif "labels" in cond:
        raise ValueError(f"class labels were given, but this {net} was built with num_classes=None")
    if text_embed is None:
        if "text" in cond:
            raise ValueError(f"text was given, but this {net} was built with text_dim=None")
        return emb, None
    states, mask, pooled = text_embed(cond, x.shape[0], x.device)
    return emb + pooled, (states, mask)
