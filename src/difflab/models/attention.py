"""Multi-head self-attention over the pixels of a feature map, as a residual block."""

from torch import Tensor, nn
from torch.nn.functional import scaled_dot_product_attention

from difflab.models.norm import group_norm, zero_


class SelfAttention(nn.Module):
    """GroupNorm → 1x1 conv to q, k, v → multi-head attention over H·W positions → 1x1 proj, plus x."""

    def __init__(self, channels: int, num_heads: int = 1, num_groups: int = 32) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: {channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels, num_groups)
        # One conv to 3C has the same parameters as DDPM's three C→C convs (q, k, v) and runs as one matmul.
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        # Zero init (as in ADM): the block starts as the identity.
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) → (N, C, H, W)."""
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.num_heads, c // self.num_heads, h * w)
        # (N, heads, d, HW) → (N, heads, HW, d): SDPA attends over the second-to-last axis, scaling by 1/√d.
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))
        out = scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return x + self.proj(out)


class CrossAttention(nn.Module):
    """GroupNorm → 1x1 conv to queries; keys and values from a context sequence (text states) → multi-head
    attention of each pixel over the context's real tokens → zero-initialised 1x1 proj, plus x (LDM style)."""

    def __init__(self, channels: int, context_dim: int, num_heads: int = 1, num_groups: int = 32) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"cross-attention: {channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels, num_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """x (N, C, H, W), context (N, L, context_dim), mask (N, L) bool (True: attend) → (N, C, H, W)."""
        n, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self.q(self.norm(x)).reshape(n, heads, d, h * w).transpose(-1, -2)  # (N, heads, HW, d)
        k, v = self.kv(context).reshape(n, -1, 2, heads, d).permute(2, 0, 3, 1, 4)  # each (N, heads, L, d)
        out = scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return x + self.proj(out)
