"""A Hugging Face Hub model id (e.g. google/ddpm-cifar10-32) where a model is expected and no such file or folder
exists here (difflab.load, sample.py ckpt=, train.py init_from=): its diffusers pipeline (or bare UNet2DModel)
fetched into the Hub's local cache (HF_HOME), configs first, so that a model difflab cannot read is refused before
its weights download. HF_HUB_OFFLINE=1 reads only what the cache holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

# owner/name as the Hub spells them; a path that exists is always read as the path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A pipeline's configs (or a bare UNet2DModel's config.json), then the weights of the networks difflab reads,
# never a pipeline's vae or text encoder: safetensors when the model has them, else the .bin (never both).
CONFIG_FILES = ["model_index.json", "config.json", "*/config.json", "scheduler/*"]
WEIGHT_FILES = [
    ["unet/*.safetensors", "transformer/*.safetensors", "diffusion_pytorch_model.safetensors"],
    ["unet/*.bin", "transformer/*.bin", "diffusion_pytorch_model.bin"],
]


def is_hub_id(path: str | Path) -> bool:
    """Whether `path` names no file or folder here but reads as a Hub model id (owner/name)."""
    return not Path(path).exists() and bool(HUB_ID.match(str(path)))


def fetch_hub_pipeline(repo_id: str, check: Callable[[Path], None]) -> Path:
    """The local snapshot of the Hub pipeline `repo_id`: its configs fetched and held to `check` (a one-line
    ValueError), then the weights of its network; a one-line error when it cannot be fetched."""
    folder = _snapshot(repo_id, CONFIG_FILES)
    check(folder)
    for patterns in WEIGHT_FILES:
        folder = _snapshot(repo_id, [*CONFIG_FILES, *patterns])
        if any(True for pattern in patterns for _ in folder.glob(pattern)):
            break
    return folder  # without weights, the folder's reader names what is missing


def _snapshot(repo_id: str, patterns: list[str]) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ValueError(
            f"{repo_id} is no file or folder here; fetching it from the Hugging Face Hub needs huggingface_hub "
            "(pip install 'difflab[diffusers]')"
        ) from error
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as error:  # offline, no such repository, gated, a network error: all end here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(
            f"{repo_id} is no file or folder here, and no Hugging Face Hub model of that name could be "
            f"fetched: {reason}"
        ) from error
