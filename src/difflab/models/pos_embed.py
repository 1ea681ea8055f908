"""The fixed 2-D sin-cos position embedding of ViT-style patch tokens (MAE, DiT)."""

import torch
from torch import Tensor


def axis_embedding(dim: int, positions: Tensor) -> Tensor:
    """1-D sin-cos embedding of positions (L,) → (L, dim): [sin | cos] of frequencies 1 … 1/10000."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed(dim: int, rows: int, cols: int) -> Tensor:
    """(rows·cols, dim) float32 embedding of a row-major grid of tokens: half the width encodes the column, half the
    row. The column comes first, as in MAE's, DiT's and diffusers' code (their meshgrid puts x first), so DiT
    weights and diffusers' DiTTransformer2DModel see the same vectors."""
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos position embedding needs a width divisible by 4 (got {dim})")
    row = torch.arange(rows).repeat_interleave(cols)
    col = torch.arange(cols).repeat(rows)
    return torch.cat([axis_embedding(dim // 2, col), axis_embedding(dim // 2, row)], dim=1).float()
