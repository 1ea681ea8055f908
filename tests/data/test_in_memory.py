"""In-memory sources (digits, MNIST-style IDX files, pickled CIFAR-10) served as tensors transformed once: the
batches a training run sees are bit for bit those of the per-image PIL path with default collation."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import ImageDataModule
from difflab.data.in_memory import ImageTensors
from difflab.data.transforms import TransformedDataset
from difflab.io.decode import fit_to_size, to_channels, to_model_tensor, uint8_to_model


def old_to_model_tensor(image: Image.Image, channels: int, target: tuple[int, int]) -> torch.Tensor:
    """to_model_tensor as it was before batches were served from uint8 tensors, verbatim."""
    fitted = fit_to_size(to_channels(image, channels), target)
    array = np.asarray(fitted, dtype=np.uint8).reshape(fitted.height, fitted.width, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def per_item(dm: ImageDataModule) -> ImageDataModule:
    """The same module reading its splits the old way: the old PIL pipeline per image, default collation."""
    dm.setup()

    def transform(image: Image.Image) -> torch.Tensor:
        return old_to_model_tensor(image, dm.channels, (dm.image_size, dm.image_size))

    assert dm._splits is not None
    dm._datasets = {
        name: TransformedDataset(getattr(dm._splits, name), transform) for name in ("train", "val")
    }
    return dm


def train_batches(dm: ImageDataModule, count: int) -> list[list[torch.Tensor]]:
    """The first `count` training batches, going on into the next epoch when one ends."""
    loader, batches = dm.train_dataloader(), []
    while len(batches) < count:
        batches += [batch for _, batch in zip(range(count - len(batches)), loader, strict=False)]
    return batches


def assert_same_batches(new: list, old: list) -> None:
    assert len(new) == len(old) > 0
    for (images, labels), (old_images, old_labels) in zip(new, old, strict=True):
        assert images.dtype == old_images.dtype == torch.float32 and labels.dtype == old_labels.dtype
        assert torch.equal(images, old_images) and torch.equal(labels, old_labels)


def assert_serves_like_the_per_item_path(make, train_count: int) -> None:
    new, old = make(), per_item(make())
    assert isinstance(new.dataset_for("train"), ImageTensors)
    assert_same_batches(train_batches(new, train_count), train_batches(old, train_count))
    assert_same_batches(list(new.val_dataloader()), list(old.val_dataloader()))
    for split in ("train", "val"):
        ours, theirs = new.dataset_for(split), old.dataset_for(split)
        for index in (0, len(theirs) - 1):
            (x, y), (old_x, old_y) = ours[index], theirs[index]
            assert torch.equal(x, old_x) and type(y) is type(old_y) is int and y == old_y


def test_scaling_a_batch_equals_scaling_each_image():
    levels = torch.arange(256, dtype=torch.uint8)
    each = torch.stack([uint8_to_model(level) for level in levels])
    assert torch.equal(uint8_to_model(levels.view(4, 1, 8, 8)).flatten(), each)
    assert torch.equal(each, levels.float() / 127.5 - 1.0)


@pytest.mark.parametrize("image_size", [8, 12])  # native, and a bicubic resize
def test_digits_batches_equal_the_per_item_path(image_size: int):
    # 1,707 train digits make 26 batches of 64 per epoch: 30 batches cross into the second epoch.
    def make() -> ImageDataModule:
        return ImageDataModule("digits", image_size=image_size, batch_size=64, seed=3)

    assert_serves_like_the_per_item_path(make, train_count=30)


def test_digits_batches_equal_per_rank_after_a_resume_and_with_workers():
    def make(workers: int = 0) -> ImageDataModule:
        dm = ImageDataModule("digits", batch_size=32, seed=5, num_workers=workers)
        # Rank 1 of 2, resumed at step 20: 26 batches of 32 per rank and epoch, so mid-epoch.
        dm.trainer = SimpleNamespace(global_rank=1, world_size=2, global_step=20, accumulate_grad_batches=1)
        return dm

    expected = train_batches(per_item(make()), 8)
    assert_same_batches(train_batches(make(), 8), expected)
    assert_same_batches(train_batches(make(workers=1), 8), expected)


def test_each_image_is_transformed_once_whatever_reads_it():
    reads: list[int] = []

    class Pictures(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, index: int) -> tuple[Image.Image, int]:
            reads.append(index)
            return Image.new("L", (4, 4), 50 * index), index

    tensors = ImageTensors(Pictures(), image_size=2, channels=1)
    first = tensors.batch([3, 1, 3])  # an index twice in a batch (a repeated small split) is read once
    assert reads == [1, 3] and first[1].tolist() == [3, 1, 3]
    assert torch.equal(tensors.batch([1, 3, 0, 4, 2])[0][:2], first[0][1:])
    assert tensors[4][1] == 4 and tensors[-1][1] == 4 and sorted(reads) == [0, 1, 2, 3, 4]
    with pytest.raises(IndexError):
        tensors[5]


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file (the format of MNIST's raw files) of uint8 values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    """MNIST's raw layout with 150 train and 40 test random 28x28 images."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, count in (("train", 150), ("t10k", 40)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count))
    return tmp_path


@pytest.mark.parametrize(("image_size", "channels"), [(28, 1), (32, 1), (16, 3)])
def test_mnist_arrays_batches_equal_the_per_item_path(fake_mnist: Path, image_size: int, channels: int):
    def make() -> ImageDataModule:
        return ImageDataModule("mnist", root=str(fake_mnist), image_size=image_size, channels=channels,
                               batch_size=16, seed=1)  # fmt: skip

    assert_serves_like_the_per_item_path(make, train_count=12)


@pytest.fixture
def fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torchvision's cifar-10-batches-py with 5 x 12 train and 10 test random images; its checksums, which
    only the real files pass, are not checked."""
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = 10 if name == "test_batch" else 12
        pixels, labels = rng.integers(0, 256, (count, 3072), dtype=np.uint8), rng.integers(0, 10, count)
        (folder / name).write_bytes(pickle.dumps({"data": pixels, "labels": labels.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return tmp_path


@pytest.mark.parametrize(("image_size", "channels"), [(32, 3), (20, 1)])
def test_cifar10_arrays_batches_equal_the_per_item_path(fake_cifar10: Path, image_size: int, channels: int):
    def make() -> ImageDataModule:
        return ImageDataModule("cifar10", root=str(fake_cifar10), image_size=image_size, channels=channels,
                               batch_size=8, seed=2)  # fmt: skip

    assert_serves_like_the_per_item_path(make, train_count=10)


def test_folder_sources_still_decode_per_image(tmp_path: Path):
    for i in range(4):
        Image.new("L", (10, 12), 40 * i).save(tmp_path / f"{i}.png")
    dm = ImageDataModule("folder", root=str(tmp_path), image_size=8, val_fraction=0.25, batch_size=2)
    assert isinstance(dm.dataset_for("train"), TransformedDataset)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 1, 8, 8) and labels.tolist() == [-1, -1]


def test_a_picture_reads_as_before():
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (13, 9, 4), dtype=np.uint8))
    for channels, size in ((1, (6, 6)), (3, (20, 20)), (4, (9, 9))):
        assert torch.equal(
            to_model_tensor(picture, channels, size), old_to_model_tensor(picture, channels, size)
        )
