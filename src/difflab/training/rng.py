"""Random state of a training step as a function of (seed, step, rank): resume and DDP need no saved RNG state."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def step_seed(seed: int, global_step: int, micro_batch: int, rank: int) -> int:
    """A 63-bit seed for one micro-batch of one rank; a SeedSequence mixes the parts, so nearby inputs
    (seed 0 step 1 vs seed 1 step 0, rank 0 vs 1) give unrelated streams."""
    words = np.random.SeedSequence([seed % 2**32, global_step, micro_batch, rank]).generate_state(2)
    return (int(words[0]) << 31) ^ int(words[1])


def seed_step(seed: int, global_step: int, micro_batch: int, rank: int) -> None:
    """Reseed torch's global generators (CPU and every CUDA device): t, ε, dropout and flips of this step."""
    torch.manual_seed(step_seed(seed, global_step, micro_batch, rank))


def random_hflip(images: Tensor) -> Tensor:
    """Mirror each image of a (N, C, H, W) batch left-right with probability 1/2 (global generator)."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
