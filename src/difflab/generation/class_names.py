"""The names of a class-conditional model's classes, so labels= can name a class (labels=[cat,dog]) as well as
number it: a folder tree's class folders as train.py recorded them, or the classes of a source that names them."""

from __future__ import annotations

import unicodedata
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


def label_names(config: Mapping[str, Any], labels: Any) -> list[str] | None:
    """The class name of each label recorded (settings.json, the evaluate report), None when the model's classes
    have no names: beside the class numbers, which on folders named 1/ 2/ 80/ read as other folders' names."""
    names = model_class_names(config)
    return None if names is None or labels is None else [names[int(label)] for label in labels]


def class_of(label: Any, names: list[str], labels: Any) -> Any:
    """The class number a label of labels= stands for on a model whose classes have `names`: a name (in any case
    or Unicode form) is looked up; where every class is named by a whole number (folders 0/ 1/ … 10/, sorted as
    text) a number names its folder too, since that is what a user typing labels=2 means; a number that is
    another class's name is refused as ambiguous. Anything else is returned as given, for the caller to check."""
    numbered = all(name.isdigit() for name in names)
    if isinstance(label, int) and not isinstance(label, bool):
        if numbered:
            return _index_of(str(label), names, labels)
        if str(label) in names and names.index(str(label)) != label:
            named = names.index(str(label))
            if not 0 <= label < len(names):
                return named  # no class has that number: it can only be the name
            raise ValueError(
                f"labels={labels!r}: {label} is class number {label} ({names[label]!r}) and the name of class "
                f"{named}: give a name instead, labels='{label}' (quoted) or labels='{names[label]}'"
            )
        return label
    if isinstance(label, str):
        return _index_of(label, names, labels)
    return label


def _index_of(name: str, names: list[str], labels: Any) -> int:
    """The class named `name`: as written, else in Unicode's composed form and any case (one match only); a name
    the model does not know is one line that lists its classes (and the nearest one)."""
    if name in names:
        return names.index(name)
    key = unicodedata.normalize("NFC", name).casefold()
    matches = [i for i, known in enumerate(names) if unicodedata.normalize("NFC", known).casefold() == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        same = ", ".join(names[i] for i in matches)
        raise ValueError(
            f"labels={labels!r}: {name!r} matches several classes ({same}): give one as it is written"
        )
    near = nearest_word(name, names)
    hint = f"; did you mean {near!r}?" if near else ""
    shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
    raise ValueError(f"labels={labels!r}: {name!r} is no class of this model (its classes: {shown}){hint}")
