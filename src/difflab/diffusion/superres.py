"""Super-resolution (SR3, Saharia et al. 2021) as data: the low-resolution input a net is conditioned on.

The net sees the low-resolution image upsampled bicubically to the output size (cond["low_res"], concatenated to
x_t), so one U-Net serves any factor. Pairs are made from high-resolution images: antialiased downsampling by an
integer factor, optional Gaussian noise on the small image (noise-conditioning augmentation, which makes the
net robust to inputs that are not exactly a downsampled training image), then bicubic upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def check_sr_factor(factor: int, image_size: int) -> None:
    """A one-line error unless `factor` is a whole number >= 2 that divides `image_size`."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"sr_factor must be a whole number of at least 2, got {factor!r}")
    if image_size % factor:
        raise ValueError(
            f"sr_factor={factor} does not divide image_size={image_size}; the low resolution must be whole"
        )


def downsample(images: Tensor, factor: int) -> Tensor:
    """(N, C, H, W) -> (N, C, H/factor, W/factor): bicubic with antialiasing (a low-pass filter first, as PIL's
    resize), so fine strokes average out instead of aliasing; clamped to [-1, 1] like any stored picture."""
    h, w = images.shape[-2:]
    small = F.interpolate(images, size=(h // factor, w // factor), mode="bicubic", antialias=True)
    return small.clamp(-1.0, 1.0)


def upsample(low: Tensor, size: int) -> Tensor:
    """Bicubic upsampling to (size, size), clamped to [-1, 1] (bicubic overshoots at edges)."""
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


def nearest_upsample(low: Tensor, size: int) -> Tensor:
    """Pixel replication to (size, size): how a grid shows the input as it is, without inventing detail."""
    return low.repeat_interleave(size // low.shape[-2], -2).repeat_interleave(size // low.shape[-1], -1)


def augment_low_res(low: Tensor, max_sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Noise-conditioning augmentation: each sample gets Gaussian noise of its own σ ~ U(0, max_sigma) (in [-1, 1]
    units). The σ is not given to the net: it learns to treat its input as possibly noisy."""
    if max_sigma <= 0:
        return low
    sigma = torch.rand(low.shape[0], 1, 1, 1, device=low.device, generator=generator) * max_sigma
    noise = torch.randn(low.shape, device=low.device, dtype=low.dtype, generator=generator)
    return low + sigma.to(low.dtype) * noise


def low_res_condition(
    images: Tensor, factor: int, max_sigma: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """The net's input for high-resolution `images` in [-1, 1]: downsampled, optionally noised, upsampled back."""
    low = augment_low_res(downsample(images, factor), max_sigma, generator)
    return upsample(low, images.shape[-1])
