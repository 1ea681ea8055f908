"""A dataset encoded once by an autoencoder into a latent cache on disk: the posterior mean and std of every
image (float16), keyed by the autoencoder's weights hash and the data, reused across runs, rebuilt when either
changes, written atomically (io/npz_cache). A damaged file is rebuilt with a warning; a file made by another
autoencoder or from other data is refused in one line and left as it is.

Why mean and std rather than one sample: LDM trains its denoiser on a fresh posterior draw z = mean + std·ε at
every step (first_stage_model.encode(x).sample()); keeping both reproduces that exactly for twice the bytes of a
single draw, where one stored draw would show the denoiser the same z every epoch.

With random flips (`mirrored=True`) the cache also holds the posterior of each image mirrored left-right, so a
training step can pick either per sample: the same as flipping the image before encoding, as LDM's pipeline does
(an encoder is not equivariant to flips, so flipping the latent would not be). It doubles the file. A cache
written without them is extended in place (the mirrored images encoded, the file rewritten) with a log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..io.npz_cache import UNREADABLE, check_cache_folder, write_npz
from ..progress import Progress

log = logging.getLogger("difflab")
FORMAT = "difflab-latents/1"


@dataclass(frozen=True)
class Latents:
    """Posterior means and stds (N, c, h, w) of a dataset's images (and of the images mirrored, when cached for
    random flips), and what made them."""

    mean: torch.Tensor
    std: torch.Tensor
    autoencoder_hash: str
    data_key: str
    flip_mean: torch.Tensor | None = None
    flip_std: torch.Tensor | None = None

    def sample(self, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Posterior draws mean + std·ε of the images at `index`, as float32."""
        mean, std = self.mean[index].float(), self.std[index].float()
        return mean + std * torch.randn(mean.shape, generator=generator)


def data_fingerprint(dataset: Dataset, identity: str, probe: int = 16) -> str:
    """A short hash of `identity` (dataset name, root, split, size), the image count, the bytes of the first and
    last `probe` images and, for a folder, every file's name, size and modification time: a picture replaced in
    the middle of a folder gets a new cache too (before, only the probed ends were seen), without decoding it."""
    count = len(dataset)  # type: ignore[arg-type]
    # os.fsencode: a path that is not UTF-8 is hashed by its bytes (.encode() refused it).
    digest = hashlib.sha256(os.fsencode(f"{identity}|{count}"))
    for i in [*range(min(probe, count)), *range(max(probe, count - probe), count)]:
        digest.update(dataset[i][0].numpy().astype(np.float32).tobytes())
    for path in source_files(dataset):
        stat = os.stat(path)
        digest.update(os.fsencode(f"{path}|{stat.st_size}|{stat.st_mtime_ns}"))
    return digest.hexdigest()[:16]


def source_files(dataset: Dataset) -> list[str]:
    """The files a folder dataset decodes, in order, through the datasets wrapping it (none for images that are
    held in memory: a torchvision dataset's few files are covered by the probe)."""
    while not hasattr(dataset, "samples") and hasattr(dataset, "base"):
        dataset = dataset.base
    return [str(path) for path, _ in getattr(dataset, "samples", [])]


@torch.no_grad()
def encode_dataset(
    net: torch.nn.Module, dataset: Dataset, batch_size: int = 64, mirrored: bool = False, shown: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of every image of `dataset` in order (each mirrored left-right first when `mirrored`), from the
    autoencoder `net` (on its own device); its progress `shown` (one DDP rank's, not each rank's)."""
    device = next(net.parameters()).device
    means, stds = [], []
    # Minutes for a large dataset: before, nothing was shown between the line that starts it and training.
    what = "encoding the latent cache" + (" (mirrored)" if mirrored else "")
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(Progress(what, len(dataset), "images")) if shown else None  # type: ignore[arg-type]
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images = batch[0].to(device)
            posterior = net.encode(images.flip(-1) if mirrored else images)
            means.append(posterior.mean.half().cpu())
            stds.append(posterior.std.half().cpu())
            if progress is not None:
                progress.advance(len(images))
    return torch.cat(means), torch.cat(stds)


def _parse(arrays: Mapping[str, np.ndarray]) -> Latents:
    if str(arrays["format"]) != FORMAT:
        raise ValueError(f"not a {FORMAT} file")
    mirrored = "flip_mean" in arrays
    return Latents(
        torch.from_numpy(arrays["mean"]),
        torch.from_numpy(arrays["std"]),
        str(arrays["autoencoder_hash"]),
        str(arrays["data_key"]),
        torch.from_numpy(arrays["flip_mean"]) if mirrored else None,
        torch.from_numpy(arrays["flip_std"]) if mirrored else None,
    )


def _arrays(latents: Latents) -> dict[str, np.ndarray]:
    arrays = {
        "format": np.array(FORMAT),
        "mean": latents.mean.numpy(),
        "std": latents.std.numpy(),
        "autoencoder_hash": np.array(latents.autoencoder_hash),
        "data_key": np.array(latents.data_key),
    }
    if latents.flip_mean is not None and latents.flip_std is not None:
        arrays |= {"flip_mean": latents.flip_mean.numpy(), "flip_std": latents.flip_std.numpy()}
    return arrays


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


def rows_mismatch(latents: Latents, count: int, shape: tuple[int, ...] | None = None) -> str | None:
    """What is wrong with the rows of `latents` for a dataset of `count` images whose latents have `shape` (c, h,
    w), None: one finite row of that shape per image, stds not negative. Before, rows of another shape were
    trained on (4×4 latents beside 8×8 samples) and a NaN row gave a NaN scale factor and loss, every run again."""
    arrays = {
        "mean": latents.mean,
        "std": latents.std,
        "flip_mean": latents.flip_mean,
        "flip_std": latents.flip_std,
    }
    for name, array in arrays.items():
        if array is None:
            continue
        wrong_shape = shape is not None and tuple(array.shape[1:]) != tuple(shape)
        if array.shape != latents.mean.shape or array.shape[0] != count or wrong_shape:
            return f"{name} holds {array.shape[0]} rows of shape {tuple(array.shape[1:])}"
        if not bool(torch.isfinite(array).all()):
            return f"{name} holds values that are not finite"
        if name.endswith("std") and bool((array < 0).any()):
            return f"{name} holds negative values"
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
    mirrored: bool = False,
    shape: tuple[int, ...] | None = None,
    shown: bool = True,
) -> tuple[Latents, bool]:
    """(latents, hit): the cache at `path` when it holds this autoencoder's latents of this data (and of the
    mirrored images when `mirrored`), each of `shape` when given, else what is missing encoded now and the file
    written there atomically."""
    count = len(dataset)  # type: ignore[arg-type]
    found = read_latent_cache(path)
    if found is not None:
        check_latents_match(found, path, autoencoder_hash, data_key)
        if (rows := rows_mismatch(found, count, shape)) is not None:
            # Training would index past its end (or, cut short, never see the last images): rebuilt, as damaged.
            log.warning(
                "latent cache %s is damaged (%s, for %d images): encoding the data again", path, rows, count
            )
            found = None
    if found is not None and (not mirrored or found.flip_mean is not None):
        return found, True
    check_cache_folder(path.parent, "latent_cache_dir")  # before minutes of encoding, not after
    if found is not None:
        log.info(
            "latent cache %s holds no mirrored encodings (random flips): encoding the %d mirrored images once",
            path,
            count,
        )
        latents = found
    else:
        log.info("encoding %d images into the latent cache %s (once)", count, path)
        latents = Latents(*encode_dataset(net, dataset, batch_size, shown=shown), autoencoder_hash, data_key)
    if mirrored:
        flip_mean, flip_std = encode_dataset(net, dataset, batch_size, mirrored=True, shown=shown)
        latents = replace(latents, flip_mean=flip_mean, flip_std=flip_std)
    write_npz(path, _arrays(latents))
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
