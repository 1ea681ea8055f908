"""Data layer: batch format, splits, folder scanning, transforms, errors and the Hydra configs."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import SequentialSampler

from difflab.data import DataError, ImageDataModule, UnreadableImagesWarning
from difflab.data.sampler import ResumableSampler
from difflab.data.transforms import to_channels

REPO = Path(__file__).parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CONF_DATA = REPO / "conf" / "data"


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


def test_presplit_folder_uses_train_and_test(tmp_path: Path):
    for split, count in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for i in range(count):
                save(tmp_path / split / name / f"{i}.png", Image.new("L", (8, 8), 0 if name == "a" else 255))
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, val_fraction=0.5)
    assert len(dm.dataset_for("train")) == 6 and len(dm.dataset_for("val")) == 4
    labels = [y for _, y in all_items(dm.dataset_for("val"))]
    assert sorted(labels) == [0, 0, 1, 1] and dm.num_classes == 2


def test_cifar10_reads_jpeg_folder_layout(tmp_path: Path):
    for split in ("train", "test"):
        for name in ("airplane", "automobile"):
            save(tmp_path / split / name / "0.jpg", Image.new("RGB", (32, 32), (10, 200, 30)))
    dm = ImageDataModule("cifar10", root=str(tmp_path), image_size=32, channels=3, batch_size=2)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]


def test_corrupt_files_skipped_with_one_counting_warning(class_tree: Path):
    bad = write_junk(class_tree / "cats" / "bad.png")
    write_junk(class_tree / "dogs" / "worse.jpg")
    dm = ImageDataModule("folder", root=str(class_tree), image_size=8, channels=3, val_fraction=0.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    ours = [w for w in caught if issubclass(w.category, UnreadableImagesWarning)]
    assert len(ours) == 1
    assert "2 unreadable" in str(ours[0].message) and str(bad) in str(ours[0].message)
    assert len(dm.dataset_for("train")) + len(dm.dataset_for("val")) == 13


def test_file_failing_at_load_time_names_its_path(tmp_path: Path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for i in range(3):
        save(tmp_path / f"{i}.png", Image.fromarray(noise))
    truncated = tmp_path / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:2000])  # header intact, pixel data cut short
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, channels=3, val_fraction=0.34)
    with pytest.raises(DataError, match="1.png") as excinfo:
        for split in ("train", "val"):
            all_items(dm.dataset_for(split))
    one_line_error(excinfo, str(truncated))


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


def test_loader_settings(tmp_path: Path):
    dm = ImageDataModule("digits", num_workers=2, persistent_workers=True, batch_size=16)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train.sampler, ResumableSampler) and train.drop_last
    assert isinstance(val.sampler, SequentialSampler) and not val.drop_last
    assert train.num_workers == 2 and train.persistent_workers and train.batch_size == 16
    no_workers = ImageDataModule("digits", num_workers=0, persistent_workers=True)
    assert not no_workers.train_dataloader().persistent_workers


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

    junk = tmp_path / "junk"
    write_junk(junk / "a.png")
    write_junk(junk / "b.jpg")
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(junk)).setup()
    one_line_error(excinfo, "no readable images", str(junk), "all 2 image file(s)")


def test_too_small_for_holdout_or_batch(tmp_path: Path):
    for i in range(3):
        save(tmp_path / f"{i}.png", Image.new("L", (8, 8)))
    with pytest.raises(DataError) as excinfo:
        ImageDataModule("folder", root=str(tmp_path), val_fraction=0.05).setup()
    one_line_error(excinfo, "validation split", "val_fraction=0.05", str(tmp_path))
    small = ImageDataModule("folder", root=str(tmp_path), val_fraction=0.34, batch_size=4)
    with pytest.raises(DataError, match="fewer than batch_size=4"):
        small.train_dataloader()


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
    data_cfg = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    params = set(inspect.signature(ImageDataModule.__init__).parameters) - {"self"}
    assert set(data_cfg) - {"_target_"} == params
    assert data_cfg.dataset == name
    if name == "folder":
        assert OmegaConf.is_missing(data_cfg, "root")
        data_cfg.root = str(tmp_path)
    cfg = OmegaConf.create({"seed": 0, "paths": {"data_dir": str(tmp_path)}, "data": data_cfg})
    dm = instantiate(cfg.data)  # construction only: no files are read until setup()
    assert isinstance(dm, ImageDataModule) and dm.dataset == name
