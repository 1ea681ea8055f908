"""The metrics cache keys a dataset's reference statistics (and conditioning classifier) by what decides its
images: for data=folder, its files too, so a folder changed since is scored against itself as it is now."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from difflab.data.scoring import dataset_id


def folder_data(root: Path, dataset: str = "folder") -> SimpleNamespace:
    return SimpleNamespace(
        dataset=dataset, root=str(root), channels=1, val_fraction=0.1, split_seed=0, held_out_by="name"
    )


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


def test_links_looping_back_up_the_folder_are_walked_once(tmp_path) -> None:
    # Before, the key's walk followed them round and round (the dataset's own walk did not): a run on such a
    # folder hung before its first step (helper report).
    root = tmp_path / "pictures"
    for i in range(3):
        picture(root / f"{i}.png", 10 * i)
    picture(root / "sub" / "x.png", 99)
    (root / "sub" / "up").symlink_to("..")
    (root / "self").symlink_to(root)
    keys = []
    walk = threading.Thread(target=lambda: keys.append(dataset_id(folder_data(root))), daemon=True)
    walk.start()
    walk.join(timeout=30)
    assert keys, "the walk did not end in 30 s"
    picture(root / "sub" / "y.png", 7)
    assert dataset_id(folder_data(root)) != keys[0]  # still a key of what the folder holds


def test_a_built_in_dataset_keeps_its_key_whatever_its_folder_holds(tmp_path) -> None:
    root = tmp_path / "mnist"
    picture(root / "raw" / "x.png", 0)
    before = dataset_id(folder_data(root, "mnist"))
    picture(root / "raw" / "y.png", 0)  # torchvision's files are fixed: no walk of them on every evaluation
    assert dataset_id(folder_data(root, "mnist")) == before


def test_a_reference_larger_than_its_split_is_the_whole_split_cached_once(monkeypatch) -> None:
    # Before, metrics.num_reference=100000 on 90 held-out images scored against all 90 without a word, cached
    # under its own key beside the default run's entry of the same 90 images.
    import difflab.metrics.evaluator as evaluator_module
    from difflab.metrics import Evaluator

    keys = []
    monkeypatch.setattr(
        evaluator_module, "reference_statistics", lambda key, *rest: keys.append(key) or (None, True)
    )
    monkeypatch.setattr(Evaluator, "feature_extractor", lambda self, device: None)
    for asked in (100000, 90, 40, None):
        Evaluator(num_reference=asked).reference("digits-1ch-x", 8, lambda: [], split_size=90)
    assert [key.num_images for key in keys] == [None, None, 40, None]


def test_a_reference_larger_than_its_split_is_said(monkeypatch, caplog, tmp_path) -> None:
    from difflab.data.scoring import reference_statistics
    from difflab.metrics import Evaluator

    monkeypatch.setattr(Evaluator, "reference", lambda self, *args, **kwargs: (None, True))
    data = SimpleNamespace(**vars(folder_data(tmp_path, "digits")), image_size=8)
    data.dataset_for = lambda split: [None] * 90
    with caplog.at_level("WARNING", logger="difflab"):
        reference_statistics(Evaluator(num_reference=40), data, "cpu")
        assert not caplog.records
        reference_statistics(Evaluator(num_reference=100000), data, "cpu")
    assert caplog.records[0].getMessage() == (
        "metrics.num_reference=100000, but the val split of digits holds 90 images: all 90 are the reference"
    )
