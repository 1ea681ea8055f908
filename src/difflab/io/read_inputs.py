"""Read pictures to edit or score (a file or a folder) and inpainting masks into model-space tensors, through
the same decoding and preprocessing as training (difflab.io.decode)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..listing import listed
from .decode import (
    IMAGE_SUFFIXES,
    MODES,
    cover_and_crop,
    decode_image,
    is_image_name,
    to_8bit,
    to_model_tensor,
)
from .results import SAMPLES, is_results_folder, is_training_run_folder, refuse_unfinished

# What the pictures are brought to, as their one warning names it: a model's input, or, when images are scored
# against a dataset with no model in sight, that dataset's images.
MODEL_INPUT = "the model's {shape} input"
REFERENCE_IMAGES = "the reference data's {shape} images"


@dataclass
class LoadedImages:
    """Pictures in the model's shape with where they came from and their size on disk."""

    images: Tensor  # (N, C, H, W) in [-1, 1]
    paths: list[Path]
    sizes: list[tuple[int, int]]  # (width, height) of each file as a viewer shows it, before any resizing


def image_files(path: str | Path, what: str = "image") -> list[Path]:
    """[path] for a file; the sorted pictures (any of IMAGE_SUFFIXES, as in training folders) for a folder; for a
    sample.py output folder, the samples in its images/ (not its grid.png)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        # Before, a folder a stopped sample.py left (or its images/) was edited as it was: only the part it had
        # made, without a word.
        refuse_unfinished(path, then=f"give it as {what}=")
    if path.is_dir() and is_results_folder(path):
        path = path / SAMPLES
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if (p.is_file() or p.is_symlink()) and is_image_name(p.name))
        for file in files:
            refuse_a_link_to_nothing(file)
        if not files:
            raise FileNotFoundError(
                f"no {what} files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}{_below(path)}"
            )
        if holding := _subfolders_with_pictures(path):
            # Before, left out without a word: 8 of 12 pictures edited, those in subfolders not.
            subfolders = "subfolder" if len(holding) == 1 else "subfolders"
            # stacklevel 1: said once under Python's default filter, though the set is listed again to fingerprint
            # it for resume=true.
            warnings.warn(
                f"{what}={path}: the pictures in its {subfolders} {listed(holding, 3)} are not read (only those at "
                "its top are, in name order): give a subfolder to read its own",
                UserWarning,
                stacklevel=1,
            )
        return files
    refuse_a_link_to_nothing(path)
    raise FileNotFoundError(f"{what} not found: {path}")


def _below(folder: Path) -> str:
    """Where a folder's pictures are when they lie only in its subfolders (read one level only: a set of pictures to
    edit is one folder, in its order), as a hint; "" when there are none. A training run folder's are grids."""
    if is_training_run_folder(folder):
        return (
            f" ({folder} is a training run folder: make pictures from its model with sample.py ckpt={folder})"
        )
    holding = _subfolders_with_pictures(folder)
    if not holding:
        return ""
    return f" (its subfolders {listed(holding, 3)} hold some: give one of them)"


def _subfolders_with_pictures(folder: Path) -> list[str]:
    """The names of `folder`'s subfolders (not hidden) that hold pictures at their own top, sorted; one that cannot
    be listed (no permission, a mount gone) is passed over: this is a hint, not the read."""

    def holds_pictures(sub: Path) -> bool:
        try:
            return any(is_image_name(p.name) for p in sub.iterdir() if p.is_file())
        except OSError:
            return False

    return sorted(
        sub.name
        for sub in folder.iterdir()
        if sub.is_dir() and not sub.name.startswith(".") and holds_pictures(sub)
    )


def refuse_a_link_to_nothing(path: Path) -> None:
    """A one-line error for a link whose target is gone (an edit set would be one picture short without a word)."""
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"{path} is a link to nothing ({os.readlink(path)}): remove it or fix it")


def _channels(img: Image.Image) -> int:
    """How many channels the picture really has (a palette is colour; CMYK is colour without alpha)."""
    if img.mode in ("P", "PA"):
        return 4 if img.mode == "PA" or "transparency" in img.info else 3
    return 3 if img.mode == "CMYK" else len(img.getbands())


def _size(wh: tuple[int, int]) -> str:
    return f"{wh[0]}×{wh[1]}"


def load_images(path: str | Path, shape: Sequence[int]) -> LoadedImages:
    """Pictures from a file or folder as floats in [-1, 1] of the model's (C, H, W).

    Other sizes are resized to cover the model's size and centre-cropped (bicubic, antialiased) and other
    channel counts converted (L/RGB/RGBA; alpha composited onto white), exactly as training data is, with
    one warning for the whole batch naming what changed.
    """
    paths = image_files(path)
    images, sizes = _load(paths, shape, path)
    return LoadedImages(images, paths, sizes)


def load_image_files(
    paths: Sequence[Path], shape: Sequence[int], where: str | Path, target: str = MODEL_INPUT
) -> Tensor:
    """The pictures in `paths` as a (N, C, H, W) float tensor in [-1, 1], converted as load_images does; the
    warning names the shape as `target` says (e.g. REFERENCE_IMAGES when no model takes them)."""
    return _load(paths, shape, where, target)[0]


def _load(
    paths: Sequence[Path], shape: Sequence[int], where: str | Path, target: str = MODEL_INPUT
) -> tuple[Tensor, list]:
    """Decode, convert and resize; warn once naming what changed and what the pictures were brought to."""
    c, h, w = (int(s) for s in shape)
    check_target_channels((c, h, w), target)
    images, sizes, resized, converted = [], [], [], []
    for p in paths:
        img = decode_image(p)
        sizes.append(img.size)
        # Any other mode is converted, not only another channel count: a CMYK or palette picture into an RGB
        # model, a 16-bit one into an L model (before, named only when the channel count differed).
        if _channels(img) != c or img.mode != MODES[c]:
            converted.append(f"{p.name} {img.mode}")
        if img.size != (w, h):
            resized.append(f"{p.name} {_size(img.size)}")
        images.append(to_model_tensor(img, c, (h, w)))
    warn_changes(where, (c, h, w), target, resized, converted)
    return torch.stack(images), sizes


def check_target_channels(shape: Sequence[int], target: str) -> None:
    """Refuse a shape of a channel count no picture is converted to (see MODES), naming what the pictures were to
    be brought to (`target`: a model's input, or reference data's images when no model is involved)."""
    c, h, w = shape
    if c not in MODES:
        raise ValueError(
            f"cannot load pictures as {target.format(shape=f'{c}×{h}×{w}')}: only 1, 3 or 4 channels are "
            f"supported, not {c}"
        )


def warn_changes(
    where: str | Path, shape: Sequence[int], target: str, resized: list[str], converted: list[str]
) -> None:
    """The one warning for pictures brought to `shape`: how many were resized or converted, with examples
    ("<name> <size>", "<name> <mode>"), and what they were brought to (`target`)."""
    c, h, w = shape
    changes = []
    if resized:
        changes.append(f"resized {len(resized)} to {_size((w, h))} ({_examples(resized)})")
    if converted:
        changes.append(f"converted {len(converted)} to {MODES[c]} ({_examples(converted)})")
    if changes:
        warnings.warn(
            f"pictures in {where} do not match {target.format(shape=f'{c}×{h}×{w}')}: {'; '.join(changes)}",
            stacklevel=3,
        )


def _examples(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f", … {len(items) - limit} more" if len(items) > limit else "")


def _read_mask(path: Path) -> Tensor:
    """A (H, W) bool tensor, True where the mask is white (> 127 in 8-bit grayscale): the pixels to generate. A
    16-bit or float mask is brought to 8 bits at its own scale first, as pictures are. A mask whose transparency
    says otherwise than its brightness (white pixels that are transparent) is refused: an editor's mask drawn in
    alpha over white was all generated unsaid; transparent black, as many masks are saved, agrees."""
    picture = to_8bit(decode_image(path))
    white = np.asarray(picture.convert("L")) > 127
    if picture.has_transparency_data and (white & (np.asarray(picture.convert("RGBA"))[..., 3] < 128)).any():
        raise ValueError(
            f"mask {path} has transparent white pixels: a mask is read by its brightness (white: generate, black: "
            "keep), not its transparency; save it flattened to black and white"
        )
    return torch.from_numpy(white)


def _fit_mask(generate: Tensor, mask_path: Path, image_path: Path, image_size: tuple[int, int], hw) -> Tensor:
    """Check the mask against its picture's size on disk and bring it to the model's (1, H, W) as 0/1."""
    mask_size = (generate.shape[1], generate.shape[0])
    if mask_size != tuple(image_size):
        raise ValueError(
            f"mask {mask_path} is {_size(mask_size)} but the image {image_path} is {_size(image_size)}"
        )
    if not bool(generate.any()):
        raise ValueError(f"mask {mask_path} has no pixels to generate (no white pixels)")
    m = generate.float()[None]
    if tuple(m.shape[1:]) != tuple(hw):
        # Resized and cropped like its picture; any model pixel touched by white is generated (never keep a
        # hole pixel).
        (new_w, new_h), (left, top, right, bottom) = cover_and_crop(mask_size, hw)
        m = (F.interpolate(m[None], size=(new_h, new_w), mode="area")[0] > 0).float()
        m = m[:, top:bottom, left:right]
        if not bool(m.any()):  # the picture's centre is all the model sees: the result would be the input
            raise ValueError(
                f"mask {mask_path} has no pixels to generate in the part of {image_path} the model sees: its "
                f"white pixels are all in the border cropped away to make the {_size(mask_size)} picture "
                f"{_size((hw[1], hw[0]))}"
            )
    return m


def load_masks(path: str | Path, images: LoadedImages) -> Tensor:
    """Masks for `images` as a (1 or N, 1, H, W) tensor of 0/1 (1 = generate) in the model's size.

    A file is one mask for every picture; a folder holds one mask per picture, with the same file name
    (any picture suffix). Each mask must be the size of its picture on disk.
    """
    path = Path(path)
    hw = tuple(images.images.shape[-2:])
    if path.is_dir():
        by_stem: dict[str, list[Path]] = {}
        for mask_file in image_files(path, "mask"):
            by_stem.setdefault(mask_file.stem, []).append(mask_file)
        masks = []
        for image_path, image_size in zip(images.paths, images.sizes, strict=True):
            found = by_stem.get(image_path.stem, [])
            if not found:
                raise FileNotFoundError(
                    f"no mask for {image_path.name} in {path} (masks need the pictures' names)"
                )
            # Before, the last in name order was used without a word.
            if len(found) > 1:
                names = " and ".join(p.name for p in found)
                raise ValueError(f"masks {names} in {path} both match {image_path.name}: keep one of them")
            mask_path = found[0]
            masks.append(_fit_mask(_read_mask(mask_path), mask_path, image_path, image_size, hw))
        return torch.stack(masks)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    generate = _read_mask(path)
    fitted = [_fit_mask(generate, path, p, s, hw) for p, s in zip(images.paths, images.sizes, strict=True)]
    return fitted[0][None]
