"""How a U-Net takes text: frozen encoder states projected for cross-attention, the pooled embedding lifted to
the time embedding's width, and learned "no text" embeddings for the unconditional branch (CFG)."""

import torch
from torch import Tensor, nn


class TextConditioning(nn.Module):
    """(text (N, L, D), text_mask (N, L), text_pooled (N, D), drop (N,)) → (context (N, L', ctx), mask (N, L'),
    an (N, embed_dim) term for the time embedding).

    Where `drop` is set, or no text is given, the sample sees the learned null text instead: one null token (the
    other positions masked out) and a learned null pooled vector, so its prediction does not depend on the text
    it was given, exactly (the unconditional branch of classifier-free guidance)."""

    def __init__(self, text_dim: int, context_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.text_dim = text_dim
        self.context = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, context_dim))
        self.pooled = nn.Sequential(
            nn.Linear(text_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.null_token = nn.Parameter(0.02 * torch.randn(text_dim))
        self.null_pooled = nn.Parameter(0.02 * torch.randn(text_dim))

    def forward(self, cond: dict[str, Tensor], n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        text = cond.get("text")
        dtype = self.null_token.dtype
        if text is None:
            tokens = self.null_token.expand(n, 1, -1)
            mask = torch.ones(n, 1, dtype=torch.bool, device=device)
            pooled = self.null_pooled.expand(n, -1)
        else:
            tokens, mask, pooled = self._checked(cond, n)
            tokens, pooled = tokens.to(dtype), pooled.to(dtype)
            if "drop" in cond:
                drop = cond["drop"].to(torch.bool)
                null_tokens = torch.zeros_like(tokens)
                null_tokens[:, 0] = self.null_token
                tokens = torch.where(drop[:, None, None], null_tokens, tokens)
                null_mask = torch.zeros_like(mask)
                null_mask[:, 0] = True
                mask = torch.where(drop[:, None], null_mask, mask)
                pooled = torch.where(drop[:, None], self.null_pooled.expand_as(pooled), pooled)
        return self.context(tokens), mask, self.pooled(pooled)

    def _checked(self, cond: dict[str, Tensor], n: int) -> tuple[Tensor, Tensor, Tensor]:
        text, mask, pooled = cond.get("text"), cond.get("text_mask"), cond.get("text_pooled")
        if text.ndim != 3 or text.shape[0] != n or text.shape[2] != self.text_dim:
            raise ValueError(
                f"text must be (N={n}, L, {self.text_dim}) token states (got {tuple(text.shape)})"
            )
        if mask is None or tuple(mask.shape) != tuple(text.shape[:2]):
            got = None if mask is None else tuple(mask.shape)
            raise ValueError(f"text_mask must be (N, L) = {tuple(text.shape[:2])} (got {got})")
        if pooled is None or tuple(pooled.shape) != (n, self.text_dim):
            got = None if pooled is None else tuple(pooled.shape)
            raise ValueError(f"text_pooled must be ({n}, {self.text_dim}) (got {got})")
        return text, mask.to(torch.bool), pooled
