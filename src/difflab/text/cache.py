"""Text embeddings cached on disk, one small .npz per caption, keyed by encoder name, version and caption text.

Each distinct caption is encoded once, ever: a second run over known captions reads the files and never loads
the encoder. Files are written atomically (io/npz_cache.py), so concurrent runs (DDP ranks, a sweep)
at worst encode the same caption twice, and a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.io.npz_cache import Arrays, read_npz, write_npz
from difflab.text.encoder import TextEncoder, load_encoder

FORMAT_VERSION = 1
Embedding = tuple[Tensor, Tensor]  # (token states (L, D) float16, pooled (D,) float16)


def default_text_cache_dir() -> Path:
    """$DIFFLAB_CACHE/text_embeddings if DIFFLAB_CACHE is set, else ~/.cache/difflab/text_embeddings."""
    root = os.environ.get("DIFFLAB_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "difflab") / "text_embeddings"


class TextEmbeddingCache:
    """Per-caption embeddings of one encoder version under `<cache_dir>/<encoder>-<version>/`."""

    def __init__(
        self,
        encoder: str,
        version: str,
        cache_dir: str | Path | None = None,
        loader: Callable[[str], TextEncoder] | None = None,
    ) -> None:
        self.encoder = encoder
        self.version = version
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_text_cache_dir()
        self.folder = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{encoder}-{version}")
        self.loader = loader  # None: load_encoder, looked up when a caption is missing

    def path(self, text: str) -> Path:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        return self.folder / digest[:2] / f"{digest}.npz"

    def get(self, texts: Sequence[str], batch_size: int = 64) -> dict[str, Embedding]:
        """The embedding of every distinct text; only texts missing from the cache are encoded (and stored)."""
        found: dict[str, Embedding] = {}
        missing: list[str] = []
        for text in dict.fromkeys(texts):  # distinct, in order
            hit = self._read(text)
            if hit is None:
                missing.append(text)
            else:
                found[text] = hit
        if missing:
            encoder = (self.loader or load_encoder)(self.encoder)
            if encoder.version != self.version:
                raise ValueError(
                    f"text encoder {self.encoder} {encoder.version} is installed, but embeddings of version "
                    f"{self.version} were asked for; install that version or retrain"
                )
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                for text, (tokens, pooled) in zip(chunk, encoder.encode(chunk, batch_size), strict=True):
                    found[text] = (tokens.half(), pooled.half())
                    self._write(text, *found[text])
        return {text: found[text] for text in dict.fromkeys(texts)}

    def _read(self, text: str) -> Embedding | None:
        def parse(z: Arrays) -> Embedding | None:
            # The text is stored too, so that a hash collision or a foreign file counts as a miss.
            if int(z["version"]) != FORMAT_VERSION or str(z["text"]) != text:
                return None
            return torch.from_numpy(z["tokens"]), torch.from_numpy(z["pooled"])

        return read_npz(self.path(text), parse)  # unreadable: encoded again and overwritten

    def _write(self, text: str, tokens: Tensor, pooled: Tensor) -> None:
        arrays = {"tokens": tokens.numpy(), "pooled": pooled.numpy(), "text": np.str_(text)}
        write_npz(self.path(text), {**arrays, "version": np.int64(FORMAT_VERSION)})
