"""Batched random augmentations, drawn from an explicit generator (applied on the device, after transfer)."""

from __future__ import annotations

import torch
from torch import Tensor


def random_hflip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image of a (N, C, H, W) batch left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
