"""A set of already generated images streamed as uint8 batches: a folder of pictures, sample.py's
output folder, or an .npz (sample.py's samples.npz, or the NHWC `arr_0` files of ADM/torch-fidelity)."""

from __future__ import annotations

import functools
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .decode import IMAGE_SUFFIXES, is_image_name, to_model_uint8
from .image_tree import image_paths
from .npz_stream import NpzArray, find_array, read_rows
from .read_inputs import (
    REFERENCE_IMAGES,
    check_target_channels,
    image_files,
    load_image_files,
    refuse_a_link_to_nothing,
    warn_changes,
)
from .results import (
    SAMPLES,
    is_results_folder,
    refuse_a_training_run_folder,
    refuse_pictures_of_a_training_run,
    refuse_unfinished,
)
from .write_images import to_uint8

NPZ_KEYS = ("images", "arr_0")
# What reading an .npz that is cut short, or is no zip at all, raises.
DAMAGED_NPZ = (OSError, EOFError, zipfile.BadZipFile)
NPZ_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # the picture an (H, W, C) uint8 image is, by C


@dataclass
class ImageSet:
    """Where the images are and how many; `batches` reads them lazily, so memory stays bounded."""

    path: Path
    count: int
    files: list[Path] | None  # None for an .npz

    def batches(self, shape: tuple[int, int, int], batch_size: int = 256) -> Iterator[torch.Tensor]:
        """uint8 (N, C, H, W) batches in the reference data's shape (pictures of another size or mode are
        converted, with one warning for the first batch that needs it)."""
        if self.files is None:
            yield from _npz_batches(self.path, shape, batch_size)
            return
        warned = False
        for start in range(0, len(self.files), batch_size):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                batch = self.files[start : start + batch_size]
                images = load_image_files(batch, shape, self.path, REFERENCE_IMAGES)
            if caught and not warned:
                # The folder is read batch by batch and warned about once: say which pictures were counted.
                counted = (
                    f" (counted in pictures {start + 1}-{start + len(batch)} of {len(self.files)}; "
                    "later ones are brought alike)"
                )
                whole = len(batch) == len(self.files)
                warnings.warn(str(caught[0].message) + ("" if whole else counted), stacklevel=2)
                warned = True
            yield to_uint8(images)


def open_image_set(path: str | Path) -> ImageSet:
    """The image set at `path`, with a one-line error when there is none."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return ImageSet(path, _npz_header(path).shape[0], None)
    if path.is_file() and not is_image_name(path.name):  # a .npy of images was scored as one broken picture
        raise ValueError(
            f"{path} is neither an .npz nor a picture ({', '.join(IMAGE_SUFFIXES)}): give a folder of generated "
            "images, or an .npz holding them as uint8 (N, H, W, C)"
        )
    refuse_unfinished(path, then="score it")
    refuse_pictures_of_a_training_run(path)  # a run folder, its samples/, or one grid of them
    if path.is_dir() and is_results_folder(path):
        path = path / SAMPLES  # sample.py's output folder: samples in images/, beside grid.png
    files = image_files(path, what="generated image") if not path.is_dir() else _pictures_under(path)
    return ImageSet(path, len(files), files)


def _pictures_under(folder: Path) -> list[Path]:
    """The pictures at any depth under `folder`, in the order a training folder's are read (io.image_tree): a
    folder of class subfolders was refused as holding no image. Of a sample.py output folder inside, only its
    samples (images/) count, and an unfinished one is refused, as is a training run folder (its grids). A link to
    nothing is refused in one line (it was dropped, and the set scored with one image fewer than given)."""
    # Asked once per folder, not once per picture.
    results, refuse_run = functools.cache(is_results_folder), functools.cache(refuse_a_training_run_folder)
    files = [
        Path(path) for path in image_paths(folder) if _is_a_sample(Path(path), folder, results, refuse_run)
    ]
    for file in files:
        refuse_a_link_to_nothing(file)
    if not files:
        raise FileNotFoundError(f"no generated image files ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    return files


def _is_a_sample(
    file: Path, top: Path, is_results: Callable[[Path], bool], refuse_run: Callable[[Path], None]
) -> bool:
    """False for a picture of a sample.py output folder below `top` that is not one of its samples (its grid.png,
    its inputs); such a folder still being written (or stopped) is refused."""
    for folder in file.parents:
        if folder == top or top not in folder.parents:
            return True
        refuse_run(folder)
        if is_results(folder):
            refuse_unfinished(folder, then="score it")
            return folder / SAMPLES in file.parents
    return True


def _npz_header(path: Path) -> NpzArray:
    """The image array inside an .npz, checked from its header (its pixels are not read here)."""
    try:
        with zipfile.ZipFile(path) as archive:
            array = find_array(archive, NPZ_KEYS)
    except (*DAMAGED_NPZ, ValueError) as error:  # ValueError: a member that is no .npy
        raise ValueError(f"could not read {path}: {error}") from error
    if array is None:
        raise ValueError(f"{path} holds no image array (expected one of {', '.join(NPZ_KEYS)})")
    if array.dtype != np.uint8 or len(array.shape) != 4:
        raise ValueError(f"{path}: expected uint8 images (N, H, W, C), got {array.dtype} {array.shape}")
    if array.shape[-1] not in NPZ_MODES and array.shape[1] in NPZ_MODES:
        # Before: "images have 8 channels", for 8×8 pictures stored channels first.
        raise ValueError(
            f"{path}: images {array.shape} look like (N, C, H, W), channels first; expected (N, H, W, C): save "
            "images.transpose(0, 2, 3, 1)"
        )
    return array


def _npz_batches(path: Path, shape: tuple[int, int, int], batch_size: int) -> Iterator[torch.Tensor]:
    """NHWC uint8 from the .npz as NCHW batches, read batch by batch. Pictures of another size or channel count are
    converted as a folder's pictures are (resized to cover and centre-cropped, channels converted), with the
    folder's warning."""
    array = _npz_header(path)
    c, h, w = shape
    fits = array.shape[1:] == (h, w, c)
    if not fits:
        check_target_channels(shape, REFERENCE_IMAGES)
        if array.shape[-1] not in NPZ_MODES:
            raise ValueError(f"{path}: images have {array.shape[-1]} channels; expected 1, 2, 3 or 4")
        _warn_npz_changes(path, array.shape, shape)
    try:
        with zipfile.ZipFile(path) as archive:
            for batch in read_rows(archive, array, batch_size):
                if fits:
                    yield torch.from_numpy(batch.copy()).permute(0, 3, 1, 2).contiguous()
                else:
                    yield torch.stack([to_model_uint8(_picture(image), c, (h, w)) for image in batch])
    except DAMAGED_NPZ as error:  # a truncated or damaged file, found while reading it
        raise ValueError(f"could not read {path}: {error}") from error


def _picture(image: np.ndarray) -> Image.Image:
    """One (H, W, C) uint8 image of an .npz as the picture a file of it would be."""
    channels = image.shape[-1]
    return Image.fromarray(image[..., 0] if channels == 1 else image, NPZ_MODES[channels])


def _warn_npz_changes(path: Path, stored: tuple[int, ...], shape: tuple[int, int, int]) -> None:
    """The folder's warning for an .npz, each picture named <file>[<index>]: all of them share one size and mode."""
    count, height, width, channels = stored
    c, h, w = shape
    names = [f"{path.name}[{i}]" for i in range(count)]
    resized = [f"{name} {width}×{height}" for name in names] if (height, width) != (h, w) else []
    converted = [f"{name} {NPZ_MODES[channels]}" for name in names] if channels != c else []
    warn_changes(path, shape, REFERENCE_IMAGES, resized, converted)
