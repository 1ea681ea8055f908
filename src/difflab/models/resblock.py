"""The residual block of the DDPM U-Net, conditioned on the time (and class) embedding."""

from torch import Tensor, nn

from difflab.models.norm import group_norm, zero_


class ResidualBlock(nn.Module):
    """GroupNorm → SiLU → conv3x3 → + proj(emb) → GroupNorm → SiLU → dropout → conv3x3, plus a shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, embed_dim: int, dropout: float = 0.0, num_groups: int = 32
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, out_channels))
        self.norm2 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        # Zero init (as in ADM, Dhariwal & Nichol 2021): the block starts as the identity on its shortcut.
        self.conv2 = zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.act = nn.SiLU()
        # A 1x1 conv matches the channel count only where it changes (DDPM's "nin_shortcut").
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (N, C_in, H, W), emb (N, embed_dim) → (N, C_out, H, W)."""
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return self.shortcut(x) + h
