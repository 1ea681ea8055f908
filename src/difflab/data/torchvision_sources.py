"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, with one-line errors for missing files."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets

from difflab.data.errors import DataError

# name -> (torchvision class, display name, where torchvision expects the files under root)
TORCHVISION_SOURCES: dict[str, tuple[type[datasets.VisionDataset], str, str]] = {
    "mnist": (datasets.MNIST, "MNIST", "MNIST/raw/"),
    "fashion_mnist": (datasets.FashionMNIST, "Fashion-MNIST", "FashionMNIST/raw/"),
    "cifar10": (datasets.CIFAR10, "CIFAR-10", "cifar-10-batches-py/"),
}

DOWNLOAD_HINT = "pass data.download=true or point data.root at an existing copy"


def open_torchvision(name: str, root: Path, train: bool) -> Dataset:
    """Open the train or test split of a torchvision dataset already present in ``root``."""
    cls, display, expected = TORCHVISION_SOURCES[name]
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError as error:
        # torchvision says "Dataset not found [or corrupted]. You can use download=True ..." on several lines
        # of context; replace it with one line that names the dataset, the root and the way out.
        if "not found" not in str(error).lower():
            raise
        raise FileNotFoundError(
            f"{display} files not found in {root} (expected {root / expected}); {DOWNLOAD_HINT}"
        ) from error


def download_torchvision(name: str, root: Path) -> None:
    """Download both splits of a torchvision dataset into ``root`` (a no-op when already complete)."""
    cls, display, _ = TORCHVISION_SOURCES[name]
    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except (RuntimeError, OSError) as error:
        # torchvision reports every mirror it tried on its own lines; keep one line, cut to a readable length.
        cause = " ".join(str(error).split())[:300] or type(error).__name__
        raise DataError(
            f"downloading {display} into {root} failed ({cause}); "
            "check the network or point data.root at an existing copy with data.download=false"
        ) from error
