"""Timestep embeddings: the sinusoidal encoding of t and the MLP that lifts it to the blocks' width."""

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of timesteps t (N,), long or float, as in DDPM: [sin | cos], shape (N, dim)."""
    half = dim // 2
    # Frequencies fall geometrically from 1 to 1/max_period; DDPM divides by (half - 1) so both ends are hit.
    steps = torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * steps)
    angles = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:  # odd widths get one zero column so the output is always `dim` wide
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t followed by Linear(ch, 4ch) → SiLU → Linear(4ch, 4ch)."""

    def __init__(self, channels: int, embed_dim: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        embed_dim = embed_dim or 4 * channels
        self.mlp = nn.Sequential(nn.Linear(channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: Tensor) -> Tensor:
        """Map timesteps (N,) to embeddings (N, embed_dim)."""
        emb = timestep_embedding(t, self.channels)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
