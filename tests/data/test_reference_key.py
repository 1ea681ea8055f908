"""The metrics cache keys a dataset's reference statistics (and conditioning classifier) by what decides its
images: for data=folder, its files too, so a folder changed since is scored against itself as it is now."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from difflab.data.scoring import dataset_id


def folder_data(root: Path, dataset: str = "folder") -> SimpleNamespace:
    return SimpleNamespace(dataset=dataset, root=str(root), channels=1, val_fraction=0.1, split_seed=0)


def picture(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def test_a_picture_added_replaced_or_removed_gives_the_folder_a_new_key(tmp_path) -> None:
    # Before, the key held the folder's path only: evaluate.py said "reference statistics: 2 images (cached)"
    # and gave the same FD to the last digit after images were added to val/ and one replaced.
    root = tmp_path / "pictures"
    for i in range(3):
        picture(root / "val" / "a" / f"{i}.png", 10 * i)
    keys = [dataset_id(folder_data(root))]
    assert dataset_id(folder_data(root)) == keys[0]  # nothing changed: the same cache entry
    picture(root / "val" / "a" / "3.png", 200)
    keys.append(dataset_id(folder_data(root)))
    picture(root / "val" / "a" / "0.png", 255)  # replaced in place (same name)
    os.utime(root / "val" / "a" / "0.png", ns=(1, 1))
    keys.append(dataset_id(folder_data(root)))
    (root / "val" / "a" / "1.png").unlink()
    keys.append(dataset_id(folder_data(root)))
    assert len(set(keys)) == 4, keys


def test_a_built_in_dataset_keeps_its_key_whatever_its_folder_holds(tmp_path) -> None:
    root = tmp_path / "mnist"
    picture(root / "raw" / "x.png", 0)
    before = dataset_id(folder_data(root, "mnist"))
    picture(root / "raw" / "y.png", 0)  # torchvision's files are fixed: no walk of them on every evaluation
    assert dataset_id(folder_data(root, "mnist")) == before
