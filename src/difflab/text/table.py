"""A table of caption embeddings, padded to a fixed number of tokens: caption ids -> condition dicts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from difflab.diffusion.conditioning import rows_of
from difflab.text.cache import TextEmbeddingCache
from difflab.text.encoder import encoder_max_tokens


@dataclass
class TextTable:
    """Row i holds caption i: `tokens` (U, L, D) float16 padded with zeros, `mask` (U, L) bool (True: a real
    token), `pooled` (U, D) float16. Kept on the CPU; `condition` picks rows and casts them for the net."""

    captions: list[str]
    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def condition(
        self, ids: Tensor | Sequence[int], device: torch.device | str | None = None
    ) -> dict[str, Tensor]:
        """The cond dict (text, text_mask, text_pooled) of the captions with these ids, float32 on `device`."""
        rows = torch.as_tensor(ids, dtype=torch.long).cpu()
        device = device if device is not None else torch.device("cpu")
        return {
            "text": self.tokens[rows].to(device, torch.float32),
            "text_mask": self.mask[rows].to(device),
            "text_pooled": self.pooled[rows].to(device, torch.float32),
        }

    def subset(self, rows: Sequence[int]) -> TextTable:
        """The table of some of its captions, in the order given."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return TextTable(
            [self.captions[i] for i in rows], self.tokens[index], self.mask[index], self.pooled[index]
        )

    def cond_for(self, rows: Sequence[int]):
        """A CondFor (see diffusion.conditioning): sample i gets caption rows[i], read per batch (rows may be a
        lazy SpreadLabels of any length)."""

        def cond_for(indices: Sequence[int]) -> dict[str, Tensor]:
            return self.condition(rows_of(rows, indices))

        return cond_for


def embed_texts(
    texts: Sequence[str],
    encoder: str,
    version: str,
    max_tokens: int,
    cache_dir: str | Path | None = None,
    cache: TextEmbeddingCache | None = None,
) -> TextTable:
    """The table of `texts` (in order, duplicates kept), from the on-disk cache; token states are cut to
    `max_tokens` (the pooled embedding sees what the encoder read: up to its own limit, 256 for MiniLM)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1 (got {max_tokens})")
    cache = cache or TextEmbeddingCache(encoder, version, cache_dir)
    embeddings = cache.get(list(texts))
    dim = next(iter(embeddings.values()))[1].shape[-1] if embeddings else 1
    n = len(texts)
    tokens = torch.zeros(n, max_tokens, dim, dtype=torch.float16)
    mask = torch.zeros(n, max_tokens, dtype=torch.bool)
    pooled = torch.zeros(n, dim, dtype=torch.float16)
    cut = []
    # The encoder gives at most its own limit of states: a text that fills it was cut before it was encoded.
    read = encoder_max_tokens(encoder)
    for i, text in enumerate(texts):
        states, vector = embeddings[text]
        length = min(len(states), max_tokens)
        tokens[i, :length] = states[:length]
        mask[i, :length] = True
        pooled[i] = vector
        if len(states) > max_tokens or len(states) >= read:
            cut.append(text)
    if cut:  # as diffusers warns of a prompt past its tokenizer's length: the rest of the text is not seen
        warnings.warn(
            f"{len(set(cut))} text(s) are longer than the {min(max_tokens, read)} tokens the model reads; only their start is "
            f"seen (first: {cut[0][:60]!r}{'…' if len(cut[0]) > 60 else ''})",
            stacklevel=2,
        )
    return TextTable(list(texts), tokens, mask, pooled)
