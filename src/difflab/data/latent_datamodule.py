"""LatentDataModule: an ImageDataModule whose batches are an autoencoder's latents (latent diffusion, LDM).

Each split is encoded once into the latent cache (data/latent_cache.py: posterior mean and std, reused across
runs); every training batch draws z = mean + std·ε from its micro-batch's own generator (so a resume draws what an
uninterrupted run would), validation uses the mean, and both are multiplied by the latent scale factor, estimated
from the training latents as LDM does (1 / std) unless given. With random_flip the training split's cache also
holds the posterior of each mirrored image, and each training batch picks, per sample, the original or the mirrored
one from the same generator: the same as flipping the image before encoding. The scale factor and the autoencoder's hash and path go into every checkpoint
(state_dict); a resume with another autoencoder is refused in one line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..autoencoder_checkpoint import LoadedAutoencoder, load_autoencoder
from ..generation.task import Task
from ..latent_space import decode_latents
from .datamodule import ImageDataModule
from .errors import DataError
from .latent_cache import Latents, cached_latents, data_fingerprint, estimate_scale_factor, latent_cache_path
from .scoring import dataset_id

log = logging.getLogger("difflab")


def default_latent_cache_dir() -> Path:
    """$DIFFLAB_CACHE/latents if DIFFLAB_CACHE is set, else ~/.cache/difflab/latents."""
    root = os.environ.get("DIFFLAB_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "difflab") / "latents"


class LatentPairs(Dataset):
    """(mean and std stacked on the channel axis, then the mirrored image's mean and std when `mirrored`, label)
    per image of a split: what the loader batches."""

    def __init__(self, latents: Latents, images: Dataset, mirrored: bool = False) -> None:
        self.latents, self.images = latents, images
        self.parts = [latents.mean, latents.std]
        if mirrored:
            assert latents.flip_mean is not None and latents.flip_std is not None
            self.parts += [latents.flip_mean, latents.flip_std]

    def __len__(self) -> int:
        return self.latents.mean.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        moments = torch.cat([part[index] for part in self.parts]).float()
        return moments, self.images[index][1]


def draw_latents(moments: torch.Tensor, generator: torch.Generator, flips: bool) -> torch.Tensor:
    """Posterior draws mean + std·ε of a training batch of stacked moments; with `flips`, each sample's mean and
    std are its mirrored image's with probability 1/2. ε is drawn first, so flipping or not changes only which
    encoding a sample uses, not its noise."""
    if not flips:
        mean, std = moments.chunk(2, dim=1)
        return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
    mean, std, flip_mean, flip_std = moments.chunk(4, dim=1)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device)
    flip = (torch.rand(mean.shape[0], generator=generator, device=mean.device) < 0.5)[:, None, None, None]
    return torch.where(flip, flip_mean, mean) + torch.where(flip, flip_std, std) * noise


class LatentDataModule(ImageDataModule):
    """ImageDataModule's data as latents of `autoencoder` (an autoencoder run's checkpoint or a diffusers folder)."""

    def __init__(
        self,
        *args: Any,
        autoencoder: str,
        scale_factor: float | None = None,
        latent_cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.autoencoder_path = str(autoencoder)
        self.scale_factor = scale_factor
        self.latent_cache_dir = Path(latent_cache_dir) if latent_cache_dir else default_latent_cache_dir()
        self.loaded: LoadedAutoencoder = load_autoencoder(autoencoder)
        self.loaded.net.requires_grad_(False)
        self.loaded.net.check_image_size(self.image_size, self.image_size)
        self.resumed_from: dict[str, Any] | None = None
        self._latent_splits: dict[str, Latents] | None = None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of the latents the denoiser is trained on."""
        net = self.loaded.net
        size = self.image_size // net.down_factor
        return (net.latent_channels, size, size)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self._latent_splits is not None:
            return
        splits, pairs = {}, {}
        for split, images in self._datasets.items():
            key = data_fingerprint(images, f"{dataset_id(self)}|{split}|{self.image_size}")
            path = latent_cache_path(
                self.latent_cache_dir, self.dataset, split, self.loaded.weights_hash, key
            )
            mirrored = self.random_flip and split == "train"  # validation is never flipped
            latents, hit = cached_latents(
                path,
                self.loaded.net,
                self.loaded.weights_hash,
                images,
                key,
                mirrored=mirrored,
                shape=self.latent_shape,
                # Every DDP rank encodes (each its own copy): rank 0 alone shows how far.
                shown=self.trainer is None or self.trainer.is_global_zero,
            )
            log.info(
                "latents of the %s split: %s (%s)", split, path, "cached" if hit else "encoded and cached"
            )
            splits[split], pairs[split] = latents, LatentPairs(latents, images, mirrored)
        self._latent_splits = splits
        if self.scale_factor is not None:
            log.info("latent scale factor %.5g (data.scale_factor, as given)", self.scale_factor)
        elif self.loaded.scaling_factor is not None:
            self.scale_factor = self.loaded.scaling_factor
            log.info("latent scale factor %.5g (the autoencoder's scaling_factor)", self.scale_factor)
        else:
            self.scale_factor = estimate_scale_factor(
                splits["train"], torch.Generator().manual_seed(self.seed)
            )
            log.info("latent scale factor %.5g (1 / std of the training latents)", self.scale_factor)
        self._datasets = pairs

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        moments, *rest = batch
        trainer = self.trainer
        if trainer is not None and trainer.training:
            generator = torch.Generator(device=moments.device).manual_seed(self._flip_seeds.next(trainer))
            mean = draw_latents(moments, generator, self.random_flip)
        else:
            mean = moments.chunk(2, dim=1)[0]
        latents = mean * float(self.scale_factor)
        if self.condition is None:
            return [latents, *rest]
        return [latents, self.condition_of(rest[0], latents)]

    def dataset_for(self, split: str) -> Dataset:
        """The split's images, not their latents: what scores compare decoded samples with."""
        return super().dataset_for(split).images

    def val_dataloader(self) -> DataLoader:
        """The held-out latents in a fixed order (dataset_for gives their images)."""
        self.setup()
        return self._loader(self._datasets["val"], drop_last=False)

    def generation_task(self, n: int) -> Task:
        """The image task with the latent shape: grids and scores generate latents, then decode them."""
        return replace(super().generation_task(n), sample_shape=self.latent_shape)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from scaled latents."""
        return decode_latents(self.loaded.net, latents, float(self.scale_factor))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records of the latent space: the autoencoder (hash and path) and the scale factor."""
        return {
            "autoencoder_hash": self.loaded.weights_hash,
            "autoencoder_path": self.autoencoder_path,
            "scale_factor": self.scale_factor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("autoencoder_hash") != self.loaded.weights_hash:
            raise DataError(
                f"the checkpoint was trained on the latents of autoencoder {state.get('autoencoder_hash')} "
                f"({state.get('autoencoder_path')}), not of {self.autoencoder_path} ({self.loaded.weights_hash}): "
                "give the autoencoder it was trained with"
            )
        # A resume keeps the scale it trained with: said when setup() estimated another (a seed changed).
        if self.scale_factor is not None and self.scale_factor != state["scale_factor"]:
            log.info(
                "latent scale factor %.5g, the checkpoint's (not %.5g, estimated above)",
                state["scale_factor"],
                self.scale_factor,
            )
        self.scale_factor = state["scale_factor"]
