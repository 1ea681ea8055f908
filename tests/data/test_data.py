"""Data layer: batch format, splits, folder scanning, transforms, errors and the Hydra configs."""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import unicodedata
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import SequentialSampler

from difflab.data import DataError, ImageDataModule, UnreadableImagesWarning
from difflab.data.index_sampler import ResumableSampler
from difflab.data.latent_cache import source_files
from difflab.data.sources import holdout_split
from difflab.io.decode import to_channels
from difflab.io.read_inputs import load_images
from difflab.run.train import train

REPO = Path(__file__).parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def save(path: Path, image: Image.Image) -> Path:
    """Write an image, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_junk(path: Path, size: int = 300) -> Path:
    """Write random bytes under an image file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def all_items(dataset) -> list[tuple[torch.Tensor, int]]:
    """Every (image, label) of a dataset."""
    return [dataset[i] for i in range(len(dataset))]


def one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    """Assert the raised message is a single line containing every fragment."""
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """Three class folders of solid images in RGB, L and RGBA modes and mixed sizes (13 images)."""
    root = tmp_path / "classes"
    for i in range(4):
        # Fully transparent blue: flattened onto white unless RGBA is kept.
        save(root / "birds" / f"{i}.png", Image.new("RGBA", (17 + i, 13), (0, 0, 255, 0)))
        save(root / "cats" / f"{i}.{'jpg' if i == 0 else 'png'}", Image.new("RGB", (20 + i, 30), (255, 0, 0)))
        save(root / "dogs" / f"{i}.png", Image.new("L", (40, 24 + 3 * i), 255))
    save(root / "birds" / "nested" / "4.png", Image.new("RGBA", (9, 9), (0, 0, 255, 0)))  # any depth
    (root / "birds" / "notes.txt").write_text("not an image, ignored silently")
    return root


# --- digits: the embedded default -------------------------------------------------------------------


def test_digits_batches_have_model_format():
    dm = ImageDataModule("digits", batch_size=32)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 16, 16) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.min() < -0.99 and images.max() > 0.9  # background and ink reach the ends of the range
    assert labels.shape == (32,) and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() <= 9
    assert dm.num_classes == 10


def test_digits_holdout_is_disjoint_complete_and_seeded():
    def images(seed: int, split: str) -> set[bytes]:
        # image_size 8 keeps the 8x8 pixels unresampled; all 1,797 digits are distinct images.
        dm = ImageDataModule("digits", image_size=8, val_fraction=0.05, split_seed=seed)
        return {x.numpy().tobytes() for x, _ in all_items(dm.dataset_for(split))}

    train, val = images(0, "train"), images(0, "val")
    assert len(val) == 90 and len(train) == 1797 - 90
    assert not train & val
    assert images(0, "val") == val
    assert images(1, "val") != val


# --- folders ----------------------------------------------------------------------------------------

# Expected pixel value per class and channel count: birds are transparent blue (white once flattened;
# as RGBA only alpha is checked, the colour under alpha 0 being meaningless), cats are red (luma
# 0.299 * 255 = 76 in L), dogs are white L.
EXPECTED = {
    1: {"birds": [1.0], "cats": [76 / 255 * 2 - 1], "dogs": [1.0]},
    3: {"birds": [1.0, 1.0, 1.0], "cats": [1.0, -1.0, -1.0], "dogs": [1.0, 1.0, 1.0]},
    4: {"birds": None, "cats": [1.0, -1.0, -1.0, 1.0], "dogs": [1.0, 1.0, 1.0, 1.0]},
}


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_folder_classes_channels_and_size(class_tree: Path, channels: int):
    dm = ImageDataModule("folder", root=str(class_tree), image_size=8, channels=channels, val_fraction=0.25)
    items = all_items(dm.dataset_for("train")) + all_items(dm.dataset_for("val"))
    assert len(items) == 13 and len(dm.dataset_for("val")) == 3
    assert dm.num_classes == 3
    classes = ["birds", "cats", "dogs"]  # sorted folder names -> 0, 1, 2
    by_label = {label: [x for x, y in items if y == label] for label in range(3)}
    assert [len(by_label[i]) for i in range(3)] == [5, 4, 4]
    for label, name in enumerate(classes):
        for x in by_label[label]:
            assert x.shape == (channels, 8, 8) and x.dtype == torch.float32
            if EXPECTED[channels][name] is None:
                assert torch.all(x[3] == -1.0)
                continue
            want = torch.tensor(EXPECTED[channels][name]).view(channels, 1, 1).expand_as(x)
            assert torch.allclose(x, want, atol=0.05), name  # one cat is a (lossy) JPEG
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (3, channels, 8, 8) and labels.dtype == torch.int64


def test_rgba_kept_with_four_channels(tmp_path: Path):
    for i in range(2):
        save(tmp_path / f"{i}.png", Image.new("RGBA", (16, 16), (0, 0, 255, 51)))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, channels=4, val_fraction=0.5)
    x, label = dm.dataset_for("val")[0]
    want = torch.tensor([-1.0, -1.0, 1.0, 51 / 255 * 2 - 1]).view(4, 1, 1).expand_as(x)
    assert torch.allclose(x, want, atol=0.01)
    assert label == -1 and dm.num_classes is None  # top level holds images: unlabelled


def test_sixteen_bit_grayscale_is_rescaled_not_clipped():
    deep = Image.fromarray(np.full((4, 4), 128 * 257, dtype=np.uint16))
    assert np.asarray(to_channels(deep, 1)).max() == 128


def test_flat_folder_is_unlabelled_and_split(tmp_path: Path):
    for i in range(10):
        save(tmp_path / "faces" / f"{i:02d}.jpg", Image.new("RGB", (64, 48), (i * 20, 0, 0)))
    save(tmp_path / "cover.png", Image.new("RGB", (64, 48)))  # an image at top level: no classes
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=16, channels=3, val_fraction=0.2)
    train, val = dm.dataset_for("train"), dm.dataset_for("val")
    assert (len(train), len(val)) == (9, 2)
    assert {y for _, y in all_items(train) + all_items(val)} == {-1}
    assert dm.num_classes is None
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == [-1, -1]


def held_out_names(folder: Path) -> list[str]:
    """The file names a flat folder holds out for validation (val_fraction 0.3), in Unicode's composed form."""
    dm = ImageDataModule("folder", root=str(folder), image_size=16, channels=3, val_fraction=0.3)
    names = [Path(path).name for path in source_files(dm.dataset_for("val"))]
    return sorted(unicodedata.normalize("NFC", name) for name in names)


def test_odd_file_names_train_and_keep_their_side_of_the_split(tmp_path: Path):
    """Before, a picture whose name is not UTF-8 stopped the run ("'utf-8' codec can't encode character", naming no
    file), a named pipe called pipe.png blocked the folder scan forever, and the same files named in decomposed
    Unicode (a folder copied through macOS) moved across the held-out split without a word."""
    composed, decomposed = tmp_path / "composed", tmp_path / "decomposed"
    decomposed.mkdir()
    for i in range(12):
        name = f"café_{i:02d}.png"
        save(composed / name, Image.new("RGB", (16, 16), (i * 20, 0, 0)))
        shutil.copy(composed / name, decomposed / unicodedata.normalize("NFD", name))
    held_out = held_out_names(composed)
    assert len(held_out) == 4 and held_out_names(decomposed) == held_out
    not_utf8 = os.fsdecode(os.fsencode(composed) + b"/caf\xe9.png")
    shutil.copy(composed / "café_00.png", not_utf8)
    os.mkfifo(composed / "pipe.png")
    before = signal.signal(
        signal.SIGALRM, lambda *_: pytest.fail("the folder scan opened pipe.png and blocked")
    )
    signal.alarm(60)
    try:
        dm = ImageDataModule("folder", root=str(composed), image_size=16, channels=3, val_fraction=0.3)
        files = source_files(dm.dataset_for("train")) + source_files(dm.dataset_for("val"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert sorted(files) == sorted([*map(str, composed.glob("café_*.png")), not_utf8])


def test_presplit_folder_uses_train_and_test(tmp_path: Path):
    for split, count in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for i in range(count):
                save(tmp_path / split / name / f"{i}.png", Image.new("L", (8, 8), 0 if name == "a" else 255))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, val_fraction=0.5)
    assert len(dm.dataset_for("train")) == 6 and len(dm.dataset_for("val")) == 4
    labels = [y for _, y in all_items(dm.dataset_for("val"))]
    assert sorted(labels) == [0, 0, 1, 1] and dm.num_classes == 2


def test_a_class_folder_named_train_is_one_class_among_the_others(tmp_path: Path):
    # Before, train/ (a CIFAR-100 class) was taken for a pre-split tree: bus/ and car/ were left out unsaid, and
    # data.condition=labels found "no classes" in train/.
    for index, name in enumerate(("bus", "car", "train")):
        for i in range(5):
            save(tmp_path / name / f"{i}.png", Image.new("L", (8, 8), 100 * index))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, val_fraction=0.2)
    with pytest.warns(
        UserWarning, match=r"holds train/ beside other folders of images \(bus, car\): read as class folders"
    ):
        assert dm.num_classes == 3
    assert len(dm.dataset_for("train")) + len(dm.dataset_for("val")) == 15


def test_a_split_tree_stays_split_beside_other_folders(tmp_path: Path):
    # The rule above counts only folders of images, and never undoes a tree with a held-out folder: a macOS
    # archive's __MACOSX/ made train/ and val/ two classes, the held-out images trained on (review report).
    for split, count in (("train", 3), ("val", 1)):
        for name in ("cat", "dog"):
            for i in range(count):
                save(
                    tmp_path / split / name / f"{i}.png", Image.new("L", (8, 8), 0 if name == "cat" else 255)
                )
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._0.png").write_bytes(b"resource fork")
    (tmp_path / "notes").mkdir()
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8)
    assert dm.class_folders == ["cat", "dog"]
    assert len(dm.dataset_for("train")) == 6 and len(dm.dataset_for("val")) == 2
    save(tmp_path / "extra" / "0.png", Image.new("L", (8, 8), 128))
    beside = ImageDataModule("folder", root=str(tmp_path), image_size=8)
    with pytest.warns(
        UserWarning, match=r"is split in advance \(train/, val/\): its other folders of images \(extra\)"
    ):
        assert beside.class_folders == ["cat", "dog"]


@pytest.mark.parametrize(
    ("train", "held_out"), [("Train", "Test"), ("TRAIN", "Val"), ("train", "Validation")]
)
def test_split_folders_are_found_in_any_case(tmp_path: Path, train: str, held_out: str):
    """Before, on Linux Train/ and Test/ were two classes named Train and Test, their class folders' images mixed."""
    for split, count in ((train, 3), (held_out, 1)):
        for name in ("a", "b"):
            for i in range(count):
                save(tmp_path / split / name / f"{i}.png", Image.new("L", (8, 8), 0 if name == "a" else 255))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8)
    assert dm.num_classes == 2
    assert len(dm.dataset_for("train")) == 6 and len(dm.dataset_for("val")) == 2
    # class a (label 0) is the black pictures, class b (label 1) the white ones, in both splits
    for split in ("train", "val"):
        assert {(float(x.mean()), y) for x, y in all_items(dm.dataset_for(split))} == {(-1.0, 0), (1.0, 1)}


@pytest.mark.parametrize(
    ("held_out", "message"),
    [
        ("test/0.png", "is organised in class folders but .*test holds images outside them"),
        ("test/c/0.png", r"class folder\(s\) c in .*test do not exist in .*train"),
    ],
)
def test_a_held_out_folder_whose_labels_cannot_be_the_trains_is_refused_only_when_labels_are_used(
    tmp_path: Path, held_out: str, message: str
):
    """Before, an unconditional run was refused too, over labels it never reads."""
    for name in ("a", "b"):
        save(tmp_path / "train" / name / "0.png", Image.new("L", (8, 8), 0))
    save(tmp_path / held_out, Image.new("L", (8, 8), 255))
    with pytest.raises(DataError, match=message):
        ImageDataModule("folder", root=str(tmp_path), image_size=8, condition="labels").setup()
    unlabelled = ImageDataModule("folder", root=str(tmp_path), image_size=8)
    assert unlabelled.num_classes is None
    assert [(float(x.mean()), y) for x, y in all_items(unlabelled.dataset_for("val"))] == [(1.0, -1)]
    assert len(unlabelled.dataset_for("train")) == 2


def test_cifar10_reads_jpeg_folder_layout(tmp_path: Path):
    for split in ("train", "test"):
        for name in ("airplane", "automobile"):
            save(tmp_path / split / name / "0.jpg", Image.new("RGB", (32, 32), (10, 200, 30)))
    dm = ImageDataModule("cifar10", root=str(tmp_path), image_size=32, channels=3, batch_size=2)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]


def test_corrupt_files_skipped_with_one_counting_warning(class_tree: Path):
    bad = write_junk(class_tree / "cats" / "bad.png")
    worse = write_junk(class_tree / "dogs" / "worse.jpg")
    dm = ImageDataModule("folder", root=str(class_tree), image_size=8, channels=3, val_fraction=0.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    ours = [w for w in caught if issubclass(w.category, UnreadableImagesWarning)]
    assert len(ours) == 1
    assert str(ours[0].message) == f"skipped 2 unreadable image file(s): {bad}, {worse}"  # every one named
    assert len(dm.dataset_for("train")) + len(dm.dataset_for("val")) == 13


def test_a_picture_over_pils_size_limit_is_skipped_with_the_reason(tmp_path: Path, monkeypatch):
    """Before, a 192-megapixel photo was named as unreadable, as a broken file is. (The limit is lowered here so
    that a small picture crosses it, as a huge one does at PIL's default.)"""
    for i in range(3):
        save(tmp_path / f"{i}.png", Image.new("L", (4, 4), 0))
    big = save(tmp_path / "big.png", Image.new("L", (8, 8), 0))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # 16-pixel pictures pass, 64 pixels are over twice 20
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=4, val_fraction=0.34)
    with pytest.warns(UnreadableImagesWarning) as caught:
        dm.setup()
    assert str(caught[0].message) == (
        f"skipped 1 unreadable image file(s): {big} (over PIL's decompression-bomb limit of 40 pixels: downscale it)"
    )
    assert len(dm.dataset_for("train")) + len(dm.dataset_for("val")) == 3


def test_a_picture_in_a_colour_space_pil_turns_into_rgb_only_is_read_at_any_channels(tmp_path: Path):
    # Before, one LAB TIFF among good PNGs stopped a data.channels=1 run at its first batch with PIL's words,
    # naming no file: "conversion from LAB to RGB not supported" (PIL turns LAB into RGB, not into L) (helper report).
    for i in range(3):
        save(tmp_path / f"{i}.png", Image.new("L", (8, 8), 80 * i))
    save(tmp_path / "lab.tif", Image.new("LAB", (8, 8), (255, 128, 128)))  # L* at its top, neutral: white
    for channels in (1, 3, 4):
        dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, channels=channels, val_fraction=0.25)
        items = all_items(dm.dataset_for("train")) + all_items(dm.dataset_for("val"))
        assert len(items) == 4 and all(image.shape == (channels, 8, 8) for image, _ in items)
        assert max(float(image[:3].min()) for image, _ in items) > 0.9  # the LAB white, read as white


def test_a_labelled_run_warns_once_of_its_corrupt_files(class_tree: Path, tmp_path: Path):
    # data.condition=labels opens the folder twice (its classes are counted before the run is set up): the
    # warning came twice.
    bad = write_junk(class_tree / "cats" / "bad.png")
    data = [
        "data=folder",
        f"data.root={class_tree}",
        "data.image_size=8",
        "data.channels=3",
        "data.condition=labels",
    ]
    cfg = compose_config(
        "train", [*FAST_TRAIN, *data, "trainer.max_steps=1", "data.num_workers=0"], tmp_path / "run"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    ours = [str(w.message) for w in caught if issubclass(w.category, UnreadableImagesWarning)]
    assert ours == [f"skipped 1 unreadable image file(s): {bad}"]


def truncated_jpeg(path: Path) -> Path:
    """A real JPEG of noise cut in half: its header reads, its pixel data does not decode."""
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    save(path, Image.fromarray(noise))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_undecodable_file_is_replaced_by_the_next_one_with_a_warning_naming_it(tmp_path: Path):
    for i in range(4):
        save(tmp_path / "train" / f"{i}.png", Image.new("L", (8, 8), 60 * i))
    save(tmp_path / "val" / "0.png", Image.new("L", (8, 8)))
    bad = truncated_jpeg(tmp_path / "train" / "1b.jpg")  # sorted between 1.png and 2.png: index 2
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, val_fraction=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = dm.dataset_for("train")  # the header scan lets it through: decodability is checked lazily
        assert len(train) == 5 and not caught
        items = all_items(train) + [train[2]]
    ours = [w for w in caught if issubclass(w.category, UnreadableImagesWarning)]
    assert len(ours) == 1, "one warning per file, however often it is drawn"
    message = str(ours[0].message)
    assert "\n" not in message and str(bad) in message and "1 undecodable file(s) skipped" in message
    # The bad file's place is taken by the next image (2.png), deterministically.
    assert torch.equal(items[2][0], items[3][0]) and torch.equal(items[5][0], items[3][0])
    assert [round(float(x.mean()), 3) for x, _ in items[:5]] == [-1.0, round(60 / 127.5 - 1, 3)] + [
        round(120 / 127.5 - 1, 3)
    ] * 2 + [round(180 / 127.5 - 1, 3)]


def test_a_split_with_no_decodable_image_is_one_error(tmp_path: Path):
    for i in range(2):
        truncated_jpeg(tmp_path / f"{i}.jpg")
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, val_fraction=0.5)
    with pytest.warns(UnreadableImagesWarning), pytest.raises(DataError) as excinfo:
        dm.dataset_for("train")[0]
    one_line_error(excinfo, "none of the 1 images can be decoded", str(tmp_path))


@pytest.mark.parametrize("gone", ["folder", "files"])
def test_images_gone_during_a_run_are_one_error_and_a_lone_removed_file_is_skipped(tmp_path: Path, gone: str):
    # Before, a folder unmounted mid-run gave a warning per file, each one's place taken by the next, until none
    # was left (530 lines for 530 images).
    for i in range(12):
        save(tmp_path / "images" / f"{i:02d}.png", Image.new("L", (8, 8), 20 * i))
    dm = ImageDataModule("folder", root=str(tmp_path / "images"), image_size=8, val_fraction=0.25)
    train = dm.dataset_for("train")
    lone = Path(train.base.samples[3][0])
    lone.unlink()
    with pytest.warns(UnreadableImagesWarning, match=str(lone)):
        assert torch.equal(train[3][0], train[4][0])
    if gone == "folder":
        shutil.move(tmp_path / "images", tmp_path / "moved")
    else:
        for path in (tmp_path / "images").iterdir():
            path.unlink()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(DataError) as excinfo:
        warnings.simplefilter("always")
        train[5]
    assert not caught, "no warning per file"
    how = "is gone" if gone == "folder" else "no longer holds them"
    one_line_error(excinfo, "the images are gone since they were listed", f"{tmp_path / 'images'} {how}")


def test_a_grayscale_folder_for_a_colour_model_is_noted_once(tmp_path: Path):
    # Before, a folder of grayscale scans trained a 3-channel model on three copies of each picture without a note.
    for name, mode in (("gray", "L"), ("colour", "RGB")):
        for i in range(4):
            save(tmp_path / name / f"{i}.png", Image.new(mode, (8, 8)))

    def noted(name: str, channels: int) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ImageDataModule("folder", root=str(tmp_path / name), image_size=8, channels=channels).setup()
        return [str(w.message) for w in caught if "grayscale" in str(w.message)]

    assert noted("gray", 3) == [
        f"the pictures of {tmp_path / 'gray'} are grayscale (L): data.channels=3 trains a colour model on copies of "
        "one channel; data.channels=1 learns the same from a third of the input"
    ]
    assert noted("gray", 3) == []  # once per folder (a labelled run opens it twice)
    assert noted("gray", 1) == [] and noted("colour", 3) == []


@pytest.mark.parametrize("held_out", ["val", "validation", "valid", "test"])
def test_a_held_out_folder_beside_train_is_the_validation_split(tmp_path: Path, held_out: str):
    # Before, root/validation (Hugging Face's and Kaggle's name) was not read: 5% of train/ was held out instead.
    for i in range(4):
        save(tmp_path / "train" / f"{i}.png", Image.new("L", (8, 8), 40 * i))
    save(tmp_path / held_out / "0.png", Image.new("L", (8, 8), 255))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8)
    assert len(dm.dataset_for("train")) == 4 and len(dm.dataset_for("val")) == 1
    assert dm.dataset_for("val")[0][0].min() == 1.0  # the white picture of the held-out folder


def test_a_truncated_jpeg_does_not_stop_a_loader_with_workers(tmp_path: Path):
    """DataLoader workers are separate processes: training goes on, the worker names the file, and the next
    epoch's fresh worker does not name it again."""
    for i in range(2):
        save(tmp_path / "train" / f"{i}.png", Image.new("RGB", (8, 8), (0, 80 * i, 0)))
    save(tmp_path / "val" / "0.png", Image.new("RGB", (8, 8)))
    bad = truncated_jpeg(tmp_path / "train" / "0b.jpg")
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, channels=3, batch_size=3, num_workers=1)
    shown = tmp_path / "warnings.txt"  # where the (forked) workers print their warnings

    def show(message, category, *args, **kwargs) -> None:
        with shown.open("a") as file:
            file.write(f"{category.__name__}: {message}\n")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        epochs = [sum(len(images) for images, _ in dm.train_dataloader()) for _ in range(2)]
    assert epochs == [3, 3]  # both epochs, each a full batch
    lines = shown.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UnreadableImagesWarning") and str(bad) in lines[0]


def test_loader_is_deterministic_and_random_flips_are_drawn_per_training_batch(tmp_path: Path):
    half = np.zeros((8, 8), dtype=np.uint8)
    half[:, 4:] = 255  # left black, right white: a flip is visible
    for i in range(2):
        save(tmp_path / f"{i}.png", Image.fromarray(half))
    dm = ImageDataModule(
        "folder", root=str(tmp_path), image_size=8, random_flip=True, val_fraction=0.5, batch_size=1, seed=3
    )
    torch.manual_seed(0)
    # The flip is not in the loader (a resumed run must see the same pixels): the datamodule draws it per
    # training batch after the transfer to the device, from (seed, step, micro-batch, rank).
    for dataset in (dm.train_dataloader().dataset, dm.dataset_for("train"), dm.dataset_for("val")):
        assert {dataset[0][0][0, 0, 0].item() for _ in range(20)} == {-1.0}
    batch = [dm.dataset_for("train")[0][0].expand(40, -1, -1, -1), torch.zeros(40, dtype=torch.long)]

    def flips(step: int, micro_batches: int = 1, rank: int = 0, training: bool = True) -> list[bool]:
        module = ImageDataModule("digits", random_flip=True, seed=3)
        module.trainer = SimpleNamespace(global_step=step, global_rank=rank, training=training)
        for _ in range(micro_batches):
            images, labels = module.on_after_batch_transfer(batch, 0)
        assert labels is batch[1]
        return (images[:, 0, 0, 0] == 1.0).tolist()  # the white half now on the left

    first = flips(step=5)
    assert 5 < sum(first) < 35, "about half of a batch is mirrored"
    torch.manual_seed(123)  # the global generator (reseeded only after this hook) plays no part
    assert flips(step=5) == first
    assert flips(step=6) != first and flips(step=5, rank=1) != first
    assert flips(step=5, micro_batches=2) != first  # the second micro-batch of an accumulated step
    assert not any(flips(step=5, training=False)), "validation batches are never flipped"
    unflipped = ImageDataModule("digits", random_flip=False)
    unflipped.trainer = SimpleNamespace(global_step=5, global_rank=0, training=True)
    assert unflipped.on_after_batch_transfer(batch, 0) is batch


def test_loader_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Two cores to run on, whatever this machine has (a 1-core affinity mask lowers num_workers: tested below).
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    dm = ImageDataModule("digits", num_workers=2, persistent_workers=True, batch_size=16)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train.sampler, ResumableSampler) and train.drop_last
    assert isinstance(val.sampler, SequentialSampler) and not val.drop_last
    assert train.num_workers == 2 and train.persistent_workers and train.batch_size == 16
    no_workers = ImageDataModule("digits", num_workers=0, persistent_workers=True)
    assert not no_workers.train_dataloader().persistent_workers


# --- one reading path: training folders, evaluate.py images= and editing read a file alike ----------


def oriented(path: Path, orientation: int) -> Path:
    """An 8 wide x 4 high picture, left half black and right half white, tagged with an EXIF orientation."""
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[:, 4:] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied_everywhere(tmp_path: Path, suffix: str):
    # Orientation 6: a viewer turns the stored picture 90° clockwise, so it shows 4 wide x 8 high with the
    # stored left (black) half on top. Centre-cropped to 4x4 (rows 2-5): top rows black, bottom rows white.
    path = oriented(tmp_path / "pics" / f"a{suffix}", 6)
    oriented(tmp_path / "pics" / f"b{suffix}", 6)
    dm = ImageDataModule("folder", root=str(tmp_path / "pics"), image_size=4, channels=1, val_fraction=0.5)
    (x, _), (y, _) = dm.dataset_for("train")[0], dm.dataset_for("val")[0]
    with pytest.warns(UserWarning, match=r"a.* 4×8"):  # its size as shown, not as stored (8×4)
        edited = load_images(path, (1, 4, 4)).images[0]
    for image in (x, y, edited):
        assert image[0, 0].mean() < -0.8 and image[0, -1].mean() > 0.8, "not upright"


def test_a_file_reads_identically_for_training_and_for_evaluate_or_editing(tmp_path: Path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (30, 45, 4), dtype=np.uint8)  # non-square, partly transparent
    deep = rng.integers(0, 65536, (20, 13), dtype=np.uint16)  # a 16-bit grayscale PNG
    for name, array, channels in (("rgba", rgba, 3), ("deep", deep, 1)):
        for i in range(2):
            save(tmp_path / name / f"{i}.png", Image.fromarray(array))
        dm = ImageDataModule(
            "folder", root=str(tmp_path / name), image_size=16, channels=channels, val_fraction=0.5
        )
        trained, _ = dm.dataset_for("train")[0]
        with pytest.warns(UserWarning, match="resized 1 to 16×16"):
            scored = load_images(tmp_path / name / "0.png", (channels, 16, 16)).images[0]
        assert torch.equal(trained, scored), name
        assert trained.std() > 0.1  # real content: 16-bit values not clipped to white


def test_float_and_32_bit_pictures_read_on_their_scale_or_are_named(tmp_path: Path):
    # Scientific TIFFs: floats in [0, 1] read as black, 32-bit integers as white (PIL's convert clips them).
    ramp = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    save(tmp_path / "8bit" / "a.png", Image.fromarray(ramp))
    save(tmp_path / "unit" / "a.tif", Image.fromarray(ramp.astype(np.float32) / 255))
    save(tmp_path / "bytes" / "a.tif", Image.fromarray(ramp.astype(np.float32)))
    save(
        tmp_path / "wide" / "a.tif", Image.fromarray(ramp.astype(np.int32) * 257)
    )  # 16-bit data, 32-bit file
    expected = load_images(tmp_path / "8bit" / "a.png", (1, 8, 8)).images[0]
    for name in ("unit", "bytes", "wide"):
        assert torch.equal(load_images(tmp_path / name / "a.tif", (1, 8, 8)).images[0], expected), name
    # Values with no known scale are named, not clipped: skipped in a training folder, refused for editing.
    bad_float = save(tmp_path / "bad" / "train" / "f.tif", Image.fromarray(ramp.astype(np.float32) * 100))
    save(tmp_path / "bad" / "train" / "i.tif", Image.fromarray(ramp.astype(np.int32) * 2**20))
    save(tmp_path / "bad" / "train" / "ok.png", Image.fromarray(ramp))
    save(tmp_path / "bad" / "val" / "ok.png", Image.fromarray(ramp))
    with pytest.raises(ValueError) as excinfo:
        load_images(bad_float, (1, 8, 8))
    one_line_error(excinfo, str(bad_float), "[0, 25200]", "[0, 1] or [0, 255]")
    dm = ImageDataModule("folder", root=str(tmp_path / "bad"), image_size=8, channels=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = [dm.dataset_for("train")[i][0] for i in range(3)]
    named = " ".join(str(w.message) for w in caught if issubclass(w.category, UnreadableImagesWarning))
    assert "f.tif" in named and "i.tif" in named and "up to 65535" in named
    assert all(torch.equal(image, expected) for image in images)  # both fall back to ok.png


# --- errors -----------------------------------------------------------------------------------------


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as excinfo:
        ImageDataModule("imagenet")
    one_line_error(excinfo, "digits", "mnist", "fashion_mnist", "cifar10", "folder")


@pytest.mark.parametrize(
    ("kwargs", "fragment"), [({"image_size": 0}, "image_size"), ({"channels": 2}, "channels")]
)
def test_bad_shape_arguments(kwargs: dict, fragment: str):
    with pytest.raises(ValueError, match=fragment):
        ImageDataModule("digits", **kwargs)


def test_missing_root_names_path(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as excinfo:
        ImageDataModule("folder", root=str(missing)).setup()
    one_line_error(excinfo, str(missing))
    with pytest.raises(FileNotFoundError) as excinfo:
        ImageDataModule("mnist", root=str(missing)).setup()
    one_line_error(excinfo, str(missing), "data.download=true")


def test_unset_root_is_explained():
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("mnist")
    one_line_error(excinfo, "data.root")


def test_torchvision_files_absent_from_root(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as excinfo:
        ImageDataModule("fashion_mnist", root=str(tmp_path)).setup()
    one_line_error(excinfo, "Fashion-MNIST", str(tmp_path), "data.download=true")
    with pytest.raises(FileNotFoundError) as excinfo:
        ImageDataModule("cifar10", root=str(tmp_path)).setup()
    one_line_error(excinfo, "cifar-10-batches-py", str(tmp_path))


def test_empty_folder_and_folder_of_corrupt_files(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(empty)).setup()
    one_line_error(excinfo, "no readable images", str(empty))
    assert "hidden" not in str(excinfo.value)
    # Pictures only in a hidden folder (a viewer's .thumbs/): before, no word of why they were not read.
    save(empty / ".thumbs" / "0.png", Image.new("L", (8, 8)))
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(empty)).setup()
    one_line_error(excinfo, "; hidden folders are skipped, and .thumbs holds some)")

    junk = tmp_path / "junk"
    write_junk(junk / "a.png")
    write_junk(junk / "b.jpg")
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(junk)).setup()
    one_line_error(excinfo, "no readable images", str(junk), "all 2 image file(s)")


def test_tiny_folder_trains_with_default_settings(tmp_path: Path):
    for i in range(10):
        save(tmp_path / f"{i}.png", Image.new("L", (8, 8), 20 * i))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8)  # val_fraction 0.05, batch_size 64
    assert (len(dm.dataset_for("train")), len(dm.dataset_for("val"))) == (9, 1)  # 5 % of 10 still holds one
    with pytest.warns(
        UserWarning, match="has 9 images, fewer than one batch of 64: it is repeated"
    ) as record:
        loader = dm.train_dataloader()
    assert len(record) == 1
    # Under DDP the step takes a batch on every device (before: "fewer than one batch of 2 per device" for 3
    # images on 2 devices, where 4 were needed).
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2)
    with pytest.warns(UserWarning, match=r"fewer than one batch of 64 on each of 2 devices \(128 a step\)"):
        dm.train_dataloader()
    dm.trainer = None
    epochs = [torch.cat([images for images, _ in loader]) for _ in range(2)]
    assert [len(e) for e in epochs] == [64, 64]  # one full batch per epoch, drawn by repeating the images
    counts = torch.unique(epochs[0].flatten(1)[:, 0], return_counts=True)[1]
    assert len(counts) == 9 and set(counts.tolist()) <= {7, 8}  # every train image, about equally often
    assert not torch.equal(epochs[0], epochs[1])


def test_tiny_folder_trains_end_to_end(tmp_path: Path):
    for i in range(10):
        save(tmp_path / "pics" / f"{i}.png", Image.new("RGB", (12, 10), (20 * i, 0, 0)))
    overrides = [o for o in FAST_TRAIN if not o.startswith("data.batch_size")]  # keep the default 64
    data = ["data=folder", f"data.root={tmp_path / 'pics'}", "data.image_size=8", "data.num_workers=0"]
    with pytest.warns(UserWarning, match="repeated"):
        metrics = train(compose_config("train", [*overrides, *data, "trainer.max_steps=2"], tmp_path / "run"))
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["val/loss"])


def test_a_folder_of_any_pictures_trains_with_the_default_model(tmp_path: Path):
    # `data=folder data.root=<folder>` and nothing else: the default U-Net (attention at 8x8) must fit the
    # default folder size, so the pictures (40x40 RGB, no size given) are resized to a size it has a level for.
    for i in range(10):
        save(tmp_path / "pics" / f"{i}.png", Image.new("RGB", (40, 40), (20 * i, 0, 0)))
    overrides = [o for o in FAST_TRAIN if not o.startswith("model=")] + ["trainer.max_steps=2"]
    data = ["data=folder", f"data.root={tmp_path / 'pics'}", "data.num_workers=0"]
    cfg = compose_config("train", [*overrides, *data], tmp_path / "run")
    assert cfg.model._target_.endswith("UNet") and cfg.model.attention_resolutions == [8]
    with pytest.warns(UserWarning, match="repeated"):
        metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["val/loss"])


def test_single_image_or_empty_split_is_refused(tmp_path: Path):
    save(tmp_path / "0.png", Image.new("L", (8, 8)))
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(tmp_path), val_fraction=0.05).setup()
    one_line_error(excinfo, "validation split", "holds 1 image", "at least 2", str(tmp_path))
    save(tmp_path / "1.png", Image.new("L", (8, 8)))
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(tmp_path), val_fraction=0.0).setup()
    one_line_error(excinfo, "validation split", "val_fraction=0.0", "raise data.val_fraction")
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(tmp_path), val_fraction=0.9).setup()
    one_line_error(excinfo, "training split", "is empty")


def test_repeated_short_epochs_are_dealt_to_ranks_and_resume():
    ranks = [ResumableSampler(5, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    assert [r.batches_per_epoch for r in ranks] == [1, 1] and ranks[0].repeats == 2  # 2 ranks × 4 > 5 images
    epoch0 = torch.cat([r.epoch_order(0) for r in ranks])
    assert len(epoch0) == 8 and set(epoch0.tolist()) == set(range(5))
    assert torch.bincount(epoch0).max() == 2  # dealt from two whole shuffles: no image three times
    assert torch.equal(
        ranks[0].epoch_order(0), ResumableSampler(5, 4, seed=3, rank=0, world_size=2).epoch_order(0)
    )
    assert not torch.equal(ranks[0].epoch_order(0), ranks[0].epoch_order(1))
    resumed = ResumableSampler(5, 4, seed=3, world_size=2, position=lambda: 3)  # three batches consumed
    assert list(resumed) == ranks[0].epoch_order(3).tolist()
    # A dataset of at least one batch per rank is dealt exactly as before: a single shuffle per epoch.
    assert ResumableSampler(8, 4, world_size=2).repeats == 1


def test_num_workers_is_lowered_to_the_available_cores_silently(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ImageDataModule("digits", num_workers=8).train_dataloader().num_workers == 2
        assert ImageDataModule("digits", num_workers=1).train_dataloader().num_workers == 1


def test_num_workers_lowered_is_said_once_however_often_the_data_is_built(monkeypatch, caplog):
    # A labelled run builds its datamodule twice (its classes are counted first): the line came twice.
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(3)), raising=False)
    with caplog.at_level("INFO", logger="difflab"):
        for _ in range(2):
            ImageDataModule("digits", num_workers=7)
    assert [r.getMessage() for r in caplog.records if "lowered" in r.getMessage()] == [
        "data.num_workers=7 lowered to 3, the CPU cores available to this process"
    ]


def test_unknown_split_name():
    with pytest.raises(ValueError, match="'test'"):
        ImageDataModule("digits").dataset_for("test")


# --- real data and configs --------------------------------------------------------------------------


@pytest.mark.skipif(
    not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason=f"real MNIST not present at {SHARED_DATA}/MNIST/raw"
)
def test_mnist_from_shared_data():
    dm = ImageDataModule("mnist", root=str(SHARED_DATA), image_size=32, batch_size=8)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 32, 32) and labels.dtype == torch.int64
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert len(dm.dataset_for("train")) == 60_000 and len(dm.dataset_for("val")) == 10_000


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion_mnist", "cifar10", "folder"])
def test_config_lists_every_argument_and_instantiates(name: str, tmp_path: Path):
    data_cfg = compose_config("train", [f"data={name}"], tmp_path).data  # the option with the keys it extends
    params = set(inspect.signature(ImageDataModule.__init__).parameters) - {"self"}
    assert set(data_cfg) - {"_target_"} == params
    assert data_cfg.dataset == name
    if name == "folder":
        assert OmegaConf.is_missing(data_cfg, "root")
        data_cfg.root = str(tmp_path)
    cfg = OmegaConf.create({"seed": 0, "paths": {"data_dir": str(tmp_path)}, "data": data_cfg})
    dm = instantiate(cfg.data)  # construction only: no files are read until setup()
    assert isinstance(dm, ImageDataModule) and dm.dataset == name


def test_a_symlink_loop_in_a_folder_reads_each_image_once(tmp_path: Path):
    # Before, loop/d/back -> loop was followed ~40 times deep: 4 images became 164 samples, the held-out ones among
    # the training ones. A symlinked folder elsewhere is still read (datasets assembled from links).
    from difflab.data.folder import scan_images

    (tmp_path / "loop" / "d").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / "loop" / "d" / f"{i}.png")
    Image.new("L", (8, 8), 200).save(tmp_path / "elsewhere" / "linked.png")
    (tmp_path / "loop" / "d" / "back").symlink_to(tmp_path / "loop", target_is_directory=True)
    (tmp_path / "loop" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    samples, skipped = scan_images(tmp_path / "loop", None)
    assert sorted(Path(path).name for path, _ in samples) == [
        "0.png",
        "1.png",
        "2.png",
        "3.png",
        "linked.png",
    ]
    assert skipped == []


def test_another_class_folder_linked_into_a_class_keeps_its_own_label(tmp_path: Path):
    # Before, cats/dogs_too -> ../dogs (or cats/up -> .., a loop to the root) was walked with cats first: every dog
    # was labelled a cat, and dogs/ was dropped as "a folder with no image".
    from difflab.data.folder import scan_images

    for label, name in enumerate(("cats", "dogs")):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), 40 * i + label).save(tmp_path / "tree" / name / f"{i}.png")
    (tmp_path / "tree" / "dogs" / "puppies").mkdir()
    Image.new("L", (8, 8), 99).save(tmp_path / "tree" / "dogs" / "puppies" / "p.png")
    (tmp_path / "tree" / "cats" / "dogs_too").symlink_to(tmp_path / "tree" / "dogs", target_is_directory=True)
    (tmp_path / "tree" / "cats" / "puppies_too").symlink_to(
        tmp_path / "tree" / "dogs" / "puppies", target_is_directory=True
    )
    (tmp_path / "tree" / "cats" / "up").symlink_to(tmp_path / "tree", target_is_directory=True)
    samples, skipped = scan_images(tmp_path / "tree", {"cats": 0, "dogs": 1})
    labels = {str(Path(path).relative_to(tmp_path / "tree")): label for path, label in samples}
    assert labels == {
        "cats/0.png": 0,
        "cats/1.png": 0,
        "dogs/0.png": 1,
        "dogs/1.png": 1,
        "dogs/puppies/p.png": 1,
    }
    assert skipped == []


def test_a_link_up_from_a_class_folder_takes_no_held_out_image_into_training(tmp_path: Path):
    # Before, train/cats/up -> ../.. read val/ too: the held-out images trained, labelled cats.
    from difflab.data.folder import scan_images

    for split in ("train", "val"):
        for name in ("cats", "dogs"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("L", (8, 8), 5).save(tmp_path / split / name / f"{split}.png")
    (tmp_path / "train" / "cats" / "up").symlink_to(tmp_path, target_is_directory=True)
    samples, _ = scan_images(tmp_path / "train", {"cats": 0, "dogs": 1})
    assert sorted(str(Path(p).relative_to(tmp_path)) for p, _ in samples) == [
        "train/cats/train.png",
        "train/dogs/train.png",
    ]


def test_an_empty_class_folder_is_not_a_class_and_a_loose_image_is_named(tmp_path: Path):
    # Before, empty_class/ became class 0 (a grid row of noise, labels=[0] accepted); with a picture at the top of
    # the tree, condition=labels said the folder "has no classes (a folder needs one subfolder per class)".
    for name in ("cat", "dog"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (8, 8), 30 * i).save(tmp_path / "tree" / name / f"{i}.png")
    (tmp_path / "tree" / "empty_class").mkdir()
    data = ImageDataModule(
        dataset="folder", root=str(tmp_path / "tree"), image_size=8, channels=1, condition="labels"
    )
    with pytest.warns(UserWarning, match=r"folder\(s\) with no image are not classes: empty_class"):
        data.setup()
    assert data.num_classes == 2
    train = data.dataset_for("train")
    assert sorted({train[i][1] for i in range(len(train))}) == [0, 1]
    # Said once: a run opens its folder to check it, then again to train (before, the warning came twice).
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        ImageDataModule(
            dataset="folder", root=str(tmp_path / "tree"), image_size=8, channels=1, condition="labels"
        ).setup()
    assert not [w for w in again if "not classes" in str(w.message)]

    Image.new("L", (8, 8), 99).save(tmp_path / "tree" / "preview.png")
    loose = ImageDataModule(
        dataset="folder", root=str(tmp_path / "tree"), image_size=8, channels=1, condition="labels"
    )
    with pytest.raises(DataError, match=r"1 image\(s\) lie beside its class folders \(preview.png\)"):
        loose.setup()


def test_an_image_added_to_a_folder_moves_at_most_one_other_across_the_split(tmp_path: Path):
    # Before, the held-out images were a permutation of the count: one image more changed 4 of the 10 held out,
    # and a run resumed on the grown folder validated on images it had trained on (helper report).
    from difflab.data.sources import open_folder

    for i in range(200):
        save(tmp_path / f"{i:03d}.png", Image.new("L", (8, 8), i))

    def held_out() -> set[str]:
        return {Path(path).name for path, _ in open_folder(tmp_path, 0.05, 0).val.samples}

    before = held_out()
    save(tmp_path / "new.png", Image.new("L", (8, 8), 255))
    after = held_out()
    assert len(before) == len(after) == 10
    assert len(before - after) <= 1
    assert held_out() == after  # the same files, the same split
    (tmp_path / "new.png").unlink()
    assert held_out() == before
    # data.held_out_by=order: the split runs made before the option held out, which their resume keeps
    order = ImageDataModule(
        "folder", root=str(tmp_path), image_size=8, val_fraction=0.05, held_out_by="order"
    )
    _, permuted = holdout_split(200, 0.05, 0, "pictures")
    shades = {round((float(x.mean()) + 1) / 2 * 255) for x, _ in all_items(order.dataset_for("val"))}
    assert shades == set(permuted)  # image i is all shade i
    with pytest.raises(DataError, match=r"^unknown data.held_out_by 'names'; choose one of name, order$"):
        ImageDataModule("folder", root=str(tmp_path), held_out_by="names")


def test_labels_from_a_flat_folder_say_it_has_no_class_folders(tmp_path: Path):
    # Before, a subfolder holding no image (notes/, a run's output folder) made the 3 images "lie beside its class
    # folders", though the folder has none.
    for i in range(3):
        save(tmp_path / f"{i}.png", Image.new("L", (8, 8), 30 * i))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("label these")
    data = ImageDataModule(dataset="folder", root=str(tmp_path), image_size=8, channels=1, condition="labels")
    with pytest.raises(DataError) as excinfo:
        data.setup()
    assert str(excinfo.value) == (
        f"data.condition=labels needs labelled images, but folder at {tmp_path} has no class folders (one "
        "subfolder of images per class)"
    )


def test_a_class_whose_every_image_is_held_out_is_warned_of(tmp_path: Path):
    # Before, class dog (one image) was trained with no example when the random split held that image out.
    for name, count in (("cat", 6), ("dog", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("L", (8, 8), 30 * i).save(tmp_path / name / f"{i}.png")
    names = [f"cat/{i}.png" for i in range(6)] + ["dog/0.png"]
    seed = next(s for s in range(1000) if 6 in holdout_split(7, 0.3, s, "tree", names)[1])  # dog's image
    data = ImageDataModule(
        dataset="folder", root=str(tmp_path), image_size=8, channels=1, condition="labels",
        val_fraction=0.3, split_seed=seed,
    )  # fmt: skip
    with pytest.warns(
        UserWarning, match=r"class\(es\) dog of .* have no training image: the random split held"
    ):
        data.setup()


@pytest.mark.parametrize("condition", ["labels", None])
def test_a_class_folder_linked_under_a_second_name_is_read_once_as_the_real_folders_class(
    tmp_path: Path, condition: str | None
):
    # Before, dog and its link puppy -> dog each counted the other as another class's folder: both were dropped
    # ("folder(s) with no image are not classes: dog, puppy") and the run trained on the 6 cats alone.
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.new("L", (8, 8), 30 * i + label).save(tmp_path / name / f"{i}.png")
    (tmp_path / "puppy").symlink_to("dog", target_is_directory=True)
    data = ImageDataModule(
        dataset="folder", root=str(tmp_path), image_size=8, channels=1, condition=condition
    )
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        data.setup()
    messages = [str(w.message) for w in said]
    assert any("linked under another name" in m and "puppy -> dog" in m for m in messages), messages
    assert not any("not classes" in m for m in messages), messages
    samples = data._splits.train.samples + data._splits.val.samples
    assert sorted(str(Path(path).relative_to(tmp_path)) for path, _ in samples) == [
        f"{name}/{i}.png" for name in ("cat", "dog") for i in range(6)
    ]
    if condition == "labels":
        assert data.num_classes == 2 and data.class_folders == ["cat", "dog"]
        assert {(Path(path).parent.name, label) for path, label in samples} == {("cat", 0), ("dog", 1)}
    # scan_images given both names reads the folder once too (before: neither).
    from difflab.data.folder import scan_images

    scanned, _ = scan_images(tmp_path, {"cat": 0, "dog": 1, "puppy": 1})
    assert sorted(Path(path).parent.name for path, _ in scanned) == ["cat"] * 6 + ["dog"] * 6


def test_held_out_images_under_a_train_class_folders_second_name_are_that_class(tmp_path: Path):
    # Review: train/puppy -> dog, and a real test/puppy: its 4 held-out images were left out without a word.
    for split, name, count in (
        ("train", "cat", 6),
        ("train", "dog", 6),
        ("test", "cat", 2),
        ("test", "puppy", 4),
    ):
        (tmp_path / split / name).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (8, 8), 30 * i).save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "train" / "puppy").symlink_to("dog", target_is_directory=True)
    data = ImageDataModule(dataset="folder", root=str(tmp_path), image_size=8, channels=1, condition="labels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.setup()
    assert data.class_folders == ["cat", "dog"]
    held_out = sorted((Path(path).parent.name, label) for path, label in data._splits.val.samples)
    assert held_out == [("cat", 0)] * 2 + [("puppy", 1)] * 4


def test_held_out_images_of_a_class_folder_empty_in_train_are_counted_in_its_warning(tmp_path: Path):
    # Before, Train/c held no image and Test/c six: the warning named c as not a class, and the six held-out images
    # were left out of validation without a word.
    for split, name, count in (("Train", "a", 6), ("Train", "b", 6), ("Test", "a", 2), ("Test", "c", 6)):
        (tmp_path / split / name).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (8, 8), 30 * i).save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "Train" / "c").mkdir()
    data = ImageDataModule(dataset="folder", root=str(tmp_path), image_size=8, channels=1, condition="labels")
    with pytest.warns(UserWarning) as said:
        data.setup()
    (message,) = [str(w.message) for w in said if "not classes" in str(w.message)]
    assert message == (
        f"{tmp_path / 'Train'}: folder(s) with no image are not classes: c; their 6 held-out image(s) are left out "
        f"of validation too: {tmp_path / 'Test' / 'c'} (6)"
    )
    assert len(data.dataset_for("val")) == 2 and data.num_classes == 2
