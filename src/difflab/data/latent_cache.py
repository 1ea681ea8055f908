"""A dataset encoded once by an autoencoder into a latent cache on disk: the posterior mean and std of every
image (float16), keyed by the autoencoder's weights hash and the data, reused across runs, rebuilt when either
changes, written atomically (io/npz_cache). A damaged file is rebuilt with a warning; a file made by another
autoencoder or from other data is refused in one line and left as it is.

Why mean and std rather than one sample: LDM trains its denoiser on a fresh posterior draw z = mean + std·ε at
every step (first_stage_model.encode(x).sample()); keeping both reproduces that exactly for twice the bytes of a
single draw, where one stored draw would show the denoiser the same z every epoch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..io.npz_cache import UNREADABLE, write_npz

log = logging.getLogger("difflab")
FORMAT = "difflab-latents/1"


@dataclass(frozen=True)
class Latents:
    """Posterior means and stds (N, c, h, w) of a dataset's images, and what made them."""

    mean: torch.Tensor
    std: torch.Tensor
    autoencoder_hash: str
    data_key: str

    def sample(self, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Posterior draws mean + std·ε of the images at `index`, as float32."""
        mean, std = self.mean[index].float(), self.std[index].float()
        return mean + std * torch.randn(mean.shape, generator=generator)


def data_fingerprint(dataset: Dataset, identity: str, probe: int = 16) -> str:
    """A short hash of `identity` (dataset name, root, split, size), the image count and the bytes of the first
    and last `probe` images: enough to notice a dataset replaced or resized without reading all of it."""
    count = len(dataset)  # type: ignore[arg-type]
    digest = hashlib.sha256(f"{identity}|{count}".encode())
    for i in [*range(min(probe, count)), *range(max(probe, count - probe), count)]:
        digest.update(dataset[i][0].numpy().astype(np.float32).tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_dataset(
    net: torch.nn.Module, dataset: Dataset, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of every image of `dataset` in order, from the autoencoder `net` (on its own device)."""
    device = next(net.parameters()).device
    means, stds = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        posterior = net.encode(batch[0].to(device))
        means.append(posterior.mean.half().cpu())
        stds.append(posterior.std.half().cpu())
    return torch.cat(means), torch.cat(stds)


def _parse(arrays: Mapping[str, np.ndarray]) -> Latents:
    if str(arrays["format"]) != FORMAT:
        raise ValueError(f"not a {FORMAT} file")
    return Latents(
        torch.from_numpy(arrays["mean"]),
        torch.from_numpy(arrays["std"]),
        str(arrays["autoencoder_hash"]),
        str(arrays["data_key"]),
    )


def read_latent_cache(path: Path) -> Latents | None:
    """The cache at `path`; None when absent; None with a warning when damaged (it will be rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return _parse(arrays)
    except UNREADABLE as error:
        log.warning("latent cache %s is damaged (%s): encoding the data again", path, error)
        return None


def check_latents_match(latents: Latents, path: Path, autoencoder_hash: str, data_key: str) -> None:
    """One line refusing a cache made by another autoencoder or from other data (the file is left alone)."""
    if latents.autoencoder_hash != autoencoder_hash:
        raise ValueError(
            f"latent cache {path} was made by autoencoder {latents.autoencoder_hash}, not by the given one "
            f"({autoencoder_hash}): remove it or give the autoencoder it was made with"
        )
    if latents.data_key != data_key:
        raise ValueError(
            f"latent cache {path} holds latents of other data ({latents.data_key}, not {data_key}): remove it"
        )


def cached_latents(
    path: Path,
    net: torch.nn.Module,
    autoencoder_hash: str,
    dataset: Dataset,
    data_key: str,
    batch_size: int = 64,
) -> tuple[Latents, bool]:
    """(latents, hit): the cache at `path` when it holds this autoencoder's latents of this data, else the data
    encoded now and written there atomically."""
    found = read_latent_cache(path)
    if found is not None:
        check_latents_match(found, path, autoencoder_hash, data_key)
        return found, True
    log.info("encoding %d images into the latent cache %s (once)", len(dataset), path)  # type: ignore[arg-type]
    mean, std = encode_dataset(net, dataset, batch_size)
    latents = Latents(mean, std, autoencoder_hash, data_key)
    arrays = {
        "format": np.array(FORMAT),
        "mean": mean.numpy(),
        "std": std.numpy(),
        "autoencoder_hash": np.array(autoencoder_hash),
        "data_key": np.array(data_key),
    }
    write_npz(path, arrays)
    return latents, False


def latent_cache_path(
    cache_dir: Path, data_name: str, split: str, autoencoder_hash: str, data_key: str
) -> Path:
    """<cache_dir>/<data>-<split>-ae<hash>-data<key>.npz: one file per (autoencoder, data, split)."""
    return Path(cache_dir) / f"{data_name}-{split}-ae{autoencoder_hash}-data{data_key}.npz"


def estimate_scale_factor(
    latents: Latents, generator: torch.Generator | None = None, limit: int = 10_000
) -> float:
    """1 / std of posterior draws of (up to `limit`) cached latents: LDM's scale_factor, which makes the
    latents the denoiser sees about unit variance (LDM takes it from its first batch; here from the whole set)."""
    index = torch.arange(min(limit, latents.mean.shape[0]))
    draws = latents.sample(index, generator)
    return float(1.0 / draws.flatten().std())
