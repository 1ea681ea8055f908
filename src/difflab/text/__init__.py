"""Frozen text encoders and their embeddings, cached on disk: what text-to-image models are conditioned on.

Nothing here is stored in a checkpoint: a model records the encoder's name and version only, and the encoder is
loaded lazily, the first time a caption is met whose embedding is not cached yet.
"""

from difflab.text.cache import TextEmbeddingCache, default_text_cache_dir
from difflab.text.encoder import (
    DEFAULT_ENCODER,
    encoder_dim,
    encoder_max_tokens,
    encoder_version,
    load_encoder,
)
from difflab.text.table import TextTable, embed_texts

__all__ = [
    "DEFAULT_ENCODER",
    "TextEmbeddingCache",
    "TextTable",
    "default_text_cache_dir",
    "embed_texts",
    "encoder_dim",
    "encoder_max_tokens",
    "encoder_version",
    "load_encoder",
]
