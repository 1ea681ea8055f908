"""What a denoiser does with its inputs before its layers: timesteps spread over the batch, labels with the
"no label" row where dropped, the low-resolution image of super-resolution checked. The same `model(x, t, cond)`
contract for every network (see difflab.diffusion.conditioning for the keys of `cond`)."""

import torch
from torch import Tensor


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
