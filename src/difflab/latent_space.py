"""The latent space a latent diffusion checkpoint was trained in: its autoencoder, found where the checkpoint
recorded it (or at a moved copy given with autoencoder=) and checked by its weights hash, and the LDM scale
factor. Generation decodes through it, editing encodes through it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .autoencoder_checkpoint import LoadedAutoencoder, load_autoencoder
from .models.autoencoder import AutoencoderKL


@torch.no_grad()
def decode_latents(net: AutoencoderKL, latents: Tensor, scale_factor: float) -> Tensor:
    """Images in [-1, 1] from scaled latents: the one decoding of training grids, scores and sampling."""
    net = net.to(latents.device)
    return net.decode(latents.float() / float(scale_factor)).clamp(-1, 1)


@dataclass
class LatentSpace:
    """A checkpoint's autoencoder and scale factor; `image_shape` is what it decodes to."""

    autoencoder: LoadedAutoencoder
    scale_factor: float
    image_shape: tuple[int, int, int]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of what the denoiser generates."""
        net = self.autoencoder.net
        _, h, w = self.image_shape
        return (net.latent_channels, h // net.down_factor, w // net.down_factor)

    def decode(self, latents: Tensor) -> Tensor:
        return decode_latents(self.autoencoder.net, latents, self.scale_factor)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Scaled latents of images in [-1, 1] (on the images' device): the posterior mean, no draw, so an edit is
        reproducible. Encoded where the autoencoder is."""
        net = self.autoencoder.net
        device = next(net.parameters()).device
        latents = net.encode(images.to(device).float()).mean * float(self.scale_factor)
        return latents.to(images.device)

    def latent_mask(self, masks: Tensor) -> Tensor:
        """Inpainting masks (1 = generate) at latent resolution: a latent pixel is kept only where every image pixel
        it covers is kept, so generated where any of them is."""
        factor = self.autoencoder.net.down_factor
        return torch.nn.functional.max_pool2d(masks.float(), factor)


def load_latent_space(
    record: Mapping[str, Any] | None,
    image_shape: tuple[int, int, int],
    source: str,
    device: torch.device | str = "cpu",
    autoencoder: str | Path | None = None,
) -> LatentSpace:
    """The latent space `record` (a checkpoint's LatentDataModule state) names: its autoencoder loaded from the
    recorded path, or from `autoencoder` (a moved copy), and refused in one line unless its hash is the recorded one."""
    if not record or not record.get("autoencoder_hash") or not record.get("scale_factor"):
        raise ValueError(
            f"{source} is a latent diffusion model but records no autoencoder hash and scale factor"
        )
    wanted, path = str(record["autoencoder_hash"]), str(autoencoder or record["autoencoder_path"])
    if not Path(path).exists():
        raise ValueError(autoencoder_missing(wanted, source, path))
    loaded = load_autoencoder(path, device)
    if loaded.weights_hash != wanted:
        raise ValueError(
            autoencoder_mismatch(path, loaded.weights_hash, source, wanted, record.get("autoencoder_path"))
        )
    loaded.net.requires_grad_(False)
    return LatentSpace(loaded, float(record["scale_factor"]), image_shape)


def exported_latent_space(
    vae: str | Path, image_shape: tuple[int, int, int], device: torch.device | str = "cpu"
) -> LatentSpace:
    """The latent space of an exported latent model: the vae/ folder export.py wrote beside its denoiser, the
    model's own (nothing recorded to check it against), with the scale factor in its config."""
    loaded = load_autoencoder(vae, device)
    loaded.net.requires_grad_(False)
    return LatentSpace(loaded, float(loaded.scaling_factor), image_shape)


def autoencoder_missing(wanted: str, source: str, path: str | Path) -> str:
    """The line saying that the autoencoder (hash `wanted`) that `source` was trained with is not at `path` (moved,
    deleted), and that autoencoder= gives a copy: the one wording of sample.py, evaluate.py, export.py,
    difflab.load, python -m difflab.phema and a train.py resume."""
    return (
        f"the autoencoder {wanted} that {source} was trained with is missing ({path}): give autoencoder=<a copy "
        "of it>"
    )


def autoencoder_mismatch(
    path: str | Path, found: str, source: str, wanted: str, recorded: str | Path | None = None
) -> str:
    """The line refusing autoencoder `path` (hash `found`) for `source`, trained on the latents of `wanted` (made
    by the autoencoder at `recorded`, when another path was given). A run folder stands for its last.ckpt, which
    moves on when that autoencoder run is resumed: its step checkpoint with the wanted weights is named."""
    trained_with = wanted if recorded is None or str(recorded) == str(path) else f"{wanted} (at {recorded})"
    line = f"autoencoder {path} has hash {found} but {source} was trained with autoencoder {trained_with}"
    checkpoints = Path(path) / "checkpoints"
    if not checkpoints.is_dir():
        return f"{line}: give autoencoder=<the one it was trained with>"
    match = checkpoint_with_hash(checkpoints, wanted)
    if match is not None:
        return f"{line}: the run's last.ckpt moved on when it was resumed; give autoencoder={match}, which holds it"
    return (
        f"{line}: give autoencoder=<the one it was trained with> (none of {checkpoints}/*.ckpt holds it: the run's "
        "last.ckpt moves on when it is resumed)"
    )


CHECKPOINTS_SEARCHED = 50  # the newest of a run's checkpoints read for the wanted weights (each a full load)


def checkpoint_with_hash(checkpoints: Path, wanted: str) -> Path | None:
    """The newest checkpoint in `checkpoints` whose autoencoder weights hash to `wanted` (None: none of the newest
    CHECKPOINTS_SEARCHED)."""
    files = sorted(checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for file in files[:CHECKPOINTS_SEARCHED]:
        try:
            if load_autoencoder(file).weights_hash == wanted:
                return file
        except Exception:  # a damaged or foreign file does not hold it
            continue
    return None
