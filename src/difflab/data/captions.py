"""Captions for text-to-image training: from files beside the images (a Hugging Face imagefolder
`metadata.jsonl`, or a `.txt` per image), or built from class names with several templates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from difflab.data.errors import DataError
from difflab.data.folder import find_classes
from difflab.data.sources import split_dirs

METADATA = (
    "metadata.jsonl"  # one JSON object per line: {"file_name": <path relative to this file>, "text": …}
)
CAPTION_KINDS = ("templates", "files")

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
# Class names of the labelled sources whose files do not name them (a folder's classes are its subfolders).
CLASS_NAMES = {
    "fashion_mnist": (
        "t-shirt or top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}  # fmt: skip
DIGIT_SOURCES = ("digits", "mnist")


def class_names(dataset: str, root: Path | None) -> list[str]:
    """The readable name of each class index of a labelled source (a folder: its class subfolders, sorted)."""
    if dataset in DIGIT_SOURCES:
        return list(DIGIT_WORDS)
    # CIFAR-10's JPEG release is a folder tree (train/<class>/); its pickled one names no classes on disk.
    tree = dataset == "folder" or (dataset == "cifar10" and root is not None and (root / "train").is_dir())
    classes = find_classes(split_dirs(root)[0]) if tree and root is not None else None
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


def has_caption_files(root: Path) -> bool:
    """Whether an image tree carries its own captions (a metadata.jsonl or any .txt file anywhere under it)."""
    return any(root.rglob(METADATA)) or any(root.rglob("*.txt"))


def read_metadata(root: Path) -> dict[Path, str]:
    """Resolved image path -> caption, from every metadata.jsonl under root (file_name relative to its folder)."""
    captions: dict[Path, str] = {}
    for meta in sorted(root.rglob(METADATA)):
        with meta.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
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
                captions[(meta.parent / name).resolve()] = text.strip()
    return captions


def file_captions(paths: Sequence[str], root: Path) -> list[str]:
    """The caption of each image: its metadata.jsonl entry, else the .txt of the same name beside it."""
    metadata = read_metadata(root)
    captions, missing = [], []
    for path in map(Path, paths):
        text = metadata.get(path.resolve())
        if text is None and path.with_suffix(".txt").is_file():
            text = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        if text is None:
            missing.append(path)
            text = ""
        captions.append(text)
    if missing:
        raise DataError(
            f"{len(missing)} image(s) under {root} have no caption (first: {missing[0]}); list them in a "
            f"{METADATA} (file_name, text) or put a .txt of the same name beside each"
        )
    return captions
