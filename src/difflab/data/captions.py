"""Captions for text-to-image training: from files beside the images (a Hugging Face imagefolder
`metadata.jsonl`, or a `.txt` per image), or built from class names with several templates; and the text
condition they make: every caption embedded once (through the on-disk cache), and the caption of each sample of a
batch turned into the cond dict the net takes (text, text_mask, text_pooled)."""

from __future__ import annotations

import json
import os
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from difflab.data.errors import DataError
from difflab.data.folder import ImageFileDataset, find_classes
from difflab.data.sources import RawSplits, split_dirs
from difflab.generation.class_names import CLASS_NAMES
from difflab.io.decode import is_image_name
from difflab.io.image_tree import tree_files
from difflab.listing import listed
from difflab.text import TextTable, embed_texts

METADATA = (
    "metadata.jsonl"  # one JSON object per line: {"file_name": <path relative to this file>, "text": …}
)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Phrasings a model is trained on; others ("digit 7", "a seven") test whether it generalises through the encoder.
DIGIT_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {digit}",
    "a drawing of the number {word}",
    "handwritten {digit}",
    "the digit {word}",
    "a {digit} written by hand",
)
OBJECT_TEMPLATES = (
    "a photo of {a} {name}",
    "a picture of {a} {name}",
    "{a} {name}",
    "an image of the {name}",
    "a small photo of {a} {name}",
    "a blurry photo of the {name}",
)
DIGIT_SOURCES = ("digits", "mnist")


def class_names(dataset: str, root: Path | None, class_folders: list[str] | None = None) -> list[str]:
    """The readable name of each class index of a labelled source (a folder: its class subfolders holding images,
    `class_folders` as the dataset kept them, else as found on disk, sorted)."""
    if dataset in DIGIT_SOURCES:
        return list(DIGIT_WORDS)
    # CIFAR-10's JPEG release is a folder tree (train/<class>/); its pickled one names no classes on disk.
    tree = dataset == "folder" or (dataset == "cifar10" and root is not None and (root / "train").is_dir())
    classes = class_folders or (find_classes(split_dirs(root)[0]) if tree and root is not None else None)
    if classes:
        return [name.replace("_", " ").strip().lower() for name in classes]
    if dataset in CLASS_NAMES:
        return list(CLASS_NAMES[dataset])
    raise DataError(
        f"data.captions=templates needs labelled images, but {root} has no class subfolders; caption the "
        "images instead (a metadata.jsonl, or a .txt beside each) with data.captions=files"
    )


def templates_for(dataset: str) -> tuple[str, ...]:
    return DIGIT_TEMPLATES if dataset in DIGIT_SOURCES else OBJECT_TEMPLATES


def template_captions(dataset: str, names: Sequence[str]) -> list[str]:
    """Every (class, template) caption, class-major: caption c·T + k is template k of class c."""
    captions = []
    for index, name in enumerate(names):
        for template in templates_for(dataset):
            article = "an" if name[:1].lower() in "aeiou" else "a"
            captions.append(template.format(word=name, digit=index, name=name, a=article))
    return captions


def _caption_files(root: Path, keep: Callable[[str], bool]) -> list[Path]:
    """The files under root whose name `keep` accepts, walked as its images are: hidden folders skipped,
    symlinked ones followed (before, rglob did the opposite of both)."""
    return [Path(p) for p in tree_files(root, keep)]


def _is_metadata(name: str) -> bool:
    return name == METADATA


def _is_txt(name: str) -> bool:
    return name.lower().endswith(".txt")  # i0.TXT too, as image suffixes are matched in any case


def _txt_captions_in(folder: Path) -> dict[str, Path]:
    """A folder's .txt files (the suffix in any case) by the name of the image each captions; an exact .txt
    wins over i0.TXT beside it, as it was read before any case was."""
    names = [name for name in os.listdir(folder) if _is_txt(name) and (folder / name).is_file()]
    names.sort(key=lambda name: name.endswith(".txt"))
    return {Path(name).stem: folder / name for name in names}


def has_caption_files(root: Path) -> bool:
    """Whether an image tree carries its own captions: a metadata.jsonl, or a .txt beside an image of its name
    (a LICENSE.txt or README.txt in the tree is not a caption: before, it turned template captions off)."""
    if _caption_files(root, _is_metadata):
        return True
    stems_of: dict[Path, set[str]] = {}  # each folder listed once, however many .txt files it holds
    for txt in _caption_files(root, _is_txt):
        if txt.parent not in stems_of:
            stems_of[txt.parent] = _image_stems(txt.parent)
        if txt.stem in stems_of[txt.parent]:
            return True
    return False


def _image_stems(folder: Path) -> set[str]:
    """The names of the images in a folder without their suffix, matched in any case (img0.Png, as the images
    are read): before, only .png and .PNG were tried, and a folder of .Png captioned by .txt files got templates."""
    return {Path(name).stem for name in os.listdir(folder) if is_image_name(name)}


def _image_key(path: Path) -> Path:
    """An image's path as metadata captions are looked up: resolved, in Unicode NFC. A name stored decomposed
    (NFD, as copied from macOS) is the same name as a file_name written composed (as class folders are compared)."""
    return Path(unicodedata.normalize("NFC", str(path.resolve())))


def read_metadata(root: Path) -> dict[Path, str]:
    """Image key (_image_key) -> caption, from every metadata.jsonl under root (file_name relative to its
    folder)."""
    captions: dict[Path, str] = {}
    listed_at: dict[Path, tuple[Path, int]] = {}  # where each image was first captioned
    for meta in sorted(_caption_files(root, _is_metadata)):
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of line 1.
        for number, line in enumerate(_caption_text(meta).split("\n"), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                name, text = entry["file_name"], entry["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(
                    f"{meta} line {number} is not a JSON object with file_name and text"
                ) from None
            if not isinstance(name, str) or not isinstance(text, str):
                raise DataError(f"{meta} line {number}: file_name and text must be strings")
            image = _image_key(meta.parent / name)
            if image in listed_at:  # one caption per image: before, the last line silently won
                first, first_number = listed_at[image]
                where = f"{first} line {first_number} and {meta} line {number}"
                if first == meta:
                    where = f"{meta} lines {first_number} and {number}"
                raise DataError(f"{where} both caption file_name {name!r}: keep one line per image")
            listed_at[image] = (meta, number)
            captions[image] = text.strip()
    return captions


def _caption_text(path: Path) -> str:
    """A caption file's text (UTF-8, a byte-order mark dropped); a one-line error naming a file in another
    encoding (before: the codec's message, naming no file)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8"
        ) from None


MISSING_NAMED = 3  # images without a caption named in the error; the others are counted


def file_captions(paths: Sequence[str], root: Path) -> list[str]:
    """The caption of each image: its metadata.jsonl entry, else the .txt (.TXT) of the same name beside it."""
    metadata = read_metadata(root)
    txt_in: dict[Path, dict[str, Path]] = {}  # each folder listed once
    captions, missing = [], []
    for path in map(Path, paths):
        text = metadata.get(_image_key(path))
        if text is None:
            if path.parent not in txt_in:
                txt_in[path.parent] = _txt_captions_in(path.parent)
            txt = txt_in[path.parent].get(path.stem)
            text = None if txt is None else _caption_text(txt).strip()
        if text is None:
            missing.append(path)
            text = ""
        captions.append(text)
    if missing:
        named = listed([os.path.relpath(path, root) for path in missing], MISSING_NAMED)
        raise DataError(
            f"{len(missing)} image(s) under {root} have no caption: {named}; list them in a {METADATA} "
            "(file_name, text) or put a .txt of the same name beside each, or give data.captions=templates"
        )
    empty = [path for path, text in zip(paths, captions, strict=True) if not text.strip()]
    if empty:  # maybe on purpose (examples without a condition), maybe a caption file left blank: said
        warnings.warn(
            f"{len(empty)} image(s) under {root} have an empty caption (first: {empty[0]}): they train on the "
            "encoding of an empty text; caption them if that is not meant",
            UserWarning,
            stacklevel=2,
        )
    return captions


GRID_CAPTIONS = 8  # a captioned folder's grid: this many of the held-out split's first distinct captions


@dataclass
class CaptionConditions:
    """`table` holds every caption; a batch's second item is a class label (templates: caption label·T + k, k
    drawn per sample and step, or cycled in validation) or directly a caption id (captions from files)."""

    table: TextTable
    templates: int | None  # T for template captions, None when the items are caption ids
    grid_rows: list[int]  # the fixed captions a sample grid shows, one row each
    # The class each caption names, for the conditioning accuracy (None: unlabelled images; -1: a caption
    # shared by images of several classes names none).
    classes: list[int] | None = None

    def condition(
        self, item: torch.Tensor, device: torch.device, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        ids = item.long().cpu()
        if self.templates is not None:
            if generator is not None:
                pick = torch.randint(self.templates, ids.shape, generator=generator)
            else:
                pick = torch.arange(len(ids)) % self.templates
            ids = ids * self.templates + pick
        return self.table.condition(ids, device)

    def grid_texts(self) -> TextTable:
        return self.table.subset(self.grid_rows)

    def grid_classes(self) -> list[int] | None:
        """The class each grid caption names, or None when some names none (no conditioning accuracy)."""
        if self.classes is None:
            return None
        named = [self.classes[row] for row in self.grid_rows]
        return named if all(c >= 0 for c in named) else None


def resolve_caption_kind(captions: str | None, dataset: str, root: Path | None) -> str:
    """templates or files; null picks files for a folder that carries caption files, else templates."""
    if captions is not None:
        return captions
    return "files" if dataset == "folder" and root is not None and has_caption_files(root) else "templates"


def caption_conditions(
    splits: RawSplits,
    kind: str,
    dataset: str,
    root: Path | None,
    encoder: str,
    version: str,
    max_tokens: int,
    cache_dir: str | Path | None,
) -> tuple[CaptionConditions, RawSplits]:
    """The caption table of a dataset, and its splits with each image's label replaced by its caption id when
    the captions come from files."""
    if kind == "templates":
        if not splits.num_classes:
            raise DataError(_no_classes_for_templates(dataset, root))
        names = class_names(dataset, root, splits.class_folders)
        if len(names) != splits.num_classes:
            raise DataError(f"{dataset}: {len(names)} class names for {splits.num_classes} classes")
        count = len(templates_for(dataset))
        table = embed_texts(template_captions(dataset, names), encoder, version, max_tokens, cache_dir)
        classes = [c for c in range(len(names)) for _ in range(count)]
        return CaptionConditions(table, count, [c * count for c in range(len(names))], classes), splits

    datasets = (splits.train, splits.val)
    if root is None or not all(isinstance(d, ImageFileDataset) for d in datasets):
        raise DataError(f"data.captions=files needs an image folder (data=folder), not {dataset}")
    # Both splits at once, so a missing caption is counted wherever it is (before: the train split's alone).
    paths = [[path for path, _ in d.samples] for d in datasets]
    every = file_captions(paths[0] + paths[1], root)
    per_split = [every[: len(paths[0])], every[len(paths[0]) :]]
    distinct = list(dict.fromkeys(text for texts in per_split for text in texts))
    ids = {text: i for i, text in enumerate(distinct)}
    train, val = (
        ImageFileDataset([(path, ids[text]) for (path, _), text in zip(d.samples, texts, strict=True)])
        for d, texts in zip(datasets, per_split, strict=True)
    )
    classes = None
    if splits.num_classes:
        labels = [label for d in datasets for _, label in d.samples]
        classes = caption_classes([ids[text] for texts in per_split for text in texts], labels, len(distinct))
    trained, held_out = ([ids[text] for text in texts] for texts in per_split)
    shown = grid_captions(held_out, trained, classes)
    table = embed_texts(distinct, encoder, version, max_tokens, cache_dir)
    return CaptionConditions(table, None, shown, classes), replace(splits, train=train, val=val)


def _no_classes_for_templates(dataset: str, root: Path | None) -> str:
    """Why template captions found no classes, and the way out: the images' own captions when they carry some
    (before, a recipe's data.captions=templates over captioned images said to caption them)."""
    message = f"data.captions=templates needs labelled images, but {dataset} at {root} has no classes"
    if dataset == "folder" and root is not None and has_caption_files(root):
        return (
            f"{message}; its images carry captions (a metadata.jsonl or a .txt beside each), which templates "
            "ignore: add data.captions=files"
        )
    return f"{message}; caption the images instead (a metadata.jsonl, or a .txt beside each) with data.captions=files"


def caption_classes(caption_ids: list[int], labels: list[int], count: int) -> list[int]:
    """The class each of `count` captions names: the class of every image it captions, -1 if they differ."""
    named = [-2] * count  # -2: not seen yet
    for caption, label in zip(caption_ids, labels, strict=True):
        named[caption] = label if named[caption] in (-2, label) else -1
    return named


def grid_captions(held_out: list[int], trained: list[int], classes: list[int] | None) -> list[int]:
    """The captions a grid shows, by caption id: for labelled images the first that names each class, from the
    held-out images' captions in order and then, for a class with no held-out image, the training images' (so
    the grid and the conditioning accuracy cover every class); else the first distinct GRID_CAPTIONS of the
    held-out images (of the training images when none is held out)."""
    first_shown = list(dict.fromkeys(held_out or trained))[:GRID_CAPTIONS]
    if classes is None:
        return first_shown
    first_of_class: dict[int, int] = {}
    for caption in dict.fromkeys(held_out + trained):
        first_of_class.setdefault(classes[caption], caption)
    first_of_class.pop(-1, None)
    return [first_of_class[c] for c in sorted(first_of_class)] or first_shown
