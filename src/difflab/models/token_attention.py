"""Multi-head attention over a sequence of tokens (transformer denoisers), through torch's fused SDPA."""

from torch import Tensor, nn
from torch.nn.functional import scaled_dot_product_attention

from difflab.models.norm import zero_


class TokenSelfAttention(nn.Module):
    """x (N, L, D) → (N, L, D): one Linear to q, k, v (one matmul, not three), SDPA, an output Linear."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """Attend every token to every token."""
        n, length, width = x.shape
        # (N, L, 3, heads, d) unbound on its third axis → three (N, heads, L, d) views (SDPA attends over the
        # second-to-last axis). Unbinding there, not on a permuted leading axis, makes the backward stack the three
        # gradients straight into the qkv Linear's (N, L, 3·D) layout instead of stacking and then copying.
        qkv = self.qkv(x).view(n, length, 3, self.num_heads, -1)
        q, k, v = (part.transpose(1, 2) for part in qkv.unbind(2))
        out = scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, width))


class TokenCrossAttention(nn.Module):
    """x (N, L, D) attends to a context (N, S, D) over its real tokens (PixArt-α's text cross-attention), as a
    zero-initialised residual: an untrained block ignores the text."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = zero_(nn.Linear(width, width))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """x plus what it reads from the context; mask (N, S) bool, True where a token is real."""
        n, length, width = x.shape
        heads = self.num_heads
        q = self.q(self.norm(x)).view(n, length, heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(n, context.shape[1], 2, heads, -1).permute(2, 0, 3, 1, 4)
        out = scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return x + self.proj(out.transpose(1, 2).reshape(n, length, width))
