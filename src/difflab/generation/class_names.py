"""The names of a class-conditional model's classes, so labels= can name a class (labels=[cat,dog]) as well as
number it: a folder tree's class folders as train.py recorded them, or the classes of a source that names them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..nearest_word import nearest_word

# Class names of the labelled sources whose files do not name them (a folder's classes are its subfolders).
CLASS_NAMES = {
    "fashion_mnist": (
        "t-shirt or top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}  # fmt: skip


def model_class_names(config: Mapping[str, Any]) -> list[str] | None:
    """Class i's name for each class of a model's stored config, None when its classes have no names (the
    digits, whose numbers are their names, or a checkpoint from before class folders were recorded)."""
    data = config.get("data") or {}
    if data.get("class_folders"):
        return [str(name) for name in data["class_folders"]]
    names = CLASS_NAMES.get(str(data.get("dataset")))
    return None if names is None else list(names)


def class_index(name: str, names: list[str], labels: Any) -> int:
    """The class a name in labels= stands for: the class of that name, in any case; a name the model does not
    know is one line that lists its classes (and the nearest one)."""
    if name in names:
        return names.index(name)
    folded = [index for index, known in enumerate(names) if known.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    near = nearest_word(name, names)
    hint = f"; did you mean {near!r}?" if near else ""
    shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
    raise ValueError(f"labels={labels!r}: {name!r} is no class of this model (its classes: {shown}){hint}")
