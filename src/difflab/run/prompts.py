"""prompt= and negative_prompt= for sample.py: a text-to-image model's conditions from the command line."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import ListConfig

from ..checkpoint import LoadedModel
from ..data.conditions import GenerationConditions, balanced
from ..text import DEFAULT_ENCODER, embed_texts, encoder_version

log = logging.getLogger("difflab")

EXAMPLE = 'prompt="a handwritten seven" (or a list: prompt=["a seven","digit 3"])'


def prompt_list(value: Any, key: str) -> list[str]:
    """One prompt or a list of them as stripped strings; an empty one is an error (Hydra reads 7 as an int)."""
    items = list(value) if isinstance(value, list | tuple | ListConfig) else [value]
    texts = [str(item).strip() for item in items if item is not None]
    if not texts or len(texts) != len(items) or not all(texts):
        raise ValueError(f"{key} is empty: give a caption, e.g. {EXAMPLE}")
    return texts


def text_conditions(cfg: Any, loaded: LoadedModel, n: int) -> GenerationConditions:
    """n samples spread over the prompts (one grid row each), guided against negative_prompt when given."""
    if cfg.get("labels") is not None:
        raise ValueError(
            f"labels={cfg.labels} given, but {cfg.ckpt} holds a text-to-image model; give {EXAMPLE} instead"
        )
    if cfg.get("prompt") is None:
        raise ValueError(f"{cfg.ckpt} holds a text-to-image model: give {EXAMPLE}")
    prompts = prompt_list(cfg.prompt, "prompt")
    negative = cfg.get("negative_prompt")
    negatives = None if negative is None else prompt_list(negative, "negative_prompt")
    if negatives is not None and len(negatives) != 1:
        raise ValueError("negative_prompt takes one caption (it replaces the unconditional branch for all)")
    data = loaded.config["data"]
    encoder = data.get("text_encoder") or DEFAULT_ENCODER
    version = encoder_version(encoder)
    stored = data.get("text_encoder_version")
    if stored and stored != version:
        log.warning("the model was trained with %s %s; %s is installed and used", encoder, stored, version)
    max_tokens = int(data.get("max_tokens") or 16)
    table = embed_texts(prompts + (negatives or []), encoder, version, max_tokens, data.get("text_cache_dir"))
    conditions = balanced("text", None, n, table.subset(range(len(prompts))))
    if negatives is not None:
        conditions.negative_for = table.cond_for([len(prompts)] * n)
    return conditions
