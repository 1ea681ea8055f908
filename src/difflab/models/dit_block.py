"""The DiT block (Peebles & Xie 2023): self-attention and MLP, each modulated and gated by the conditioning
vector through adaLN-Zero, with an optional cross-attention to text between them (PixArt-α)."""

import torch
from torch import Tensor, nn
from torch.nn.functional import layer_norm

from difflab.models.norm import zero_
from difflab.models.token_attention import TokenCrossAttention, TokenSelfAttention

EPS = 1e-6  # DiT's LayerNorm eps (no affine: the conditioning supplies scale and shift)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """LayerNorm(x)·(1 + scale) + shift, per sample; one fused addcmul instead of a multiply and an add."""
    return torch.addcmul(shift, layer_norm(x, x.shape[-1:], eps=EPS), 1 + scale)


class DiTBlock(nn.Module):
    """x (N, L, D), c (N, D) → (N, L, D). The modulation Linear starts at zero, so the gates are zero and an
    untrained block is the identity (adaLN-Zero). `dropout` drops from the self-attention's and the MLP's outputs
    before their gates (diffusers' DiT drops the attention output too; 0, DiT's, draws no random numbers)."""

    def __init__(
        self,
        width: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        cross_attention: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.attn = TokenSelfAttention(width, num_heads)
        self.cross = TokenCrossAttention(width, num_heads) if cross_attention else None
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )
        # shift, scale and gate for the attention, then for the MLP; fed SiLU(c) (computed once per forward).
        self.modulation = zero_(nn.Linear(width, 6 * width))

    def forward(self, x: Tensor, silu_c: Tensor, context: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """One block; `silu_c` is SiLU of the conditioning vector, `context` (text states, mask) or None."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(silu_c)[:, None].chunk(6, dim=2)
        x = torch.addcmul(x, gate_a, self.drop(self.attn(modulate(x, shift_a, scale_a))))
        if self.cross is not None and context is not None:
            x = self.cross(x, *context)
        return torch.addcmul(x, gate_m, self.drop(self.mlp(modulate(x, shift_m, scale_m))))


class FinalLayer(nn.Module):
    """Tokens (N, L, D) → patches (N, L, p·p·C): adaLN-modulated LayerNorm and a Linear, both zero-initialised so
    an untrained DiT predicts exactly 0."""

    def __init__(self, width: int, patch_values: int) -> None:
        super().__init__()
        self.modulation = zero_(nn.Linear(width, 2 * width))
        self.linear = zero_(nn.Linear(width, patch_values))

    def forward(self, x: Tensor, silu_c: Tensor) -> Tensor:
        """The patch values of every token."""
        shift, scale = self.modulation(silu_c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(x, shift, scale))
