"""scikit-learn's bundled 8x8 handwritten digits: the framework's offline default dataset."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


class DigitsDataset(Dataset):
    """The 1,797 digits of ``sklearn.datasets.load_digits`` as 8x8 PIL "L" images with labels 0-9."""

    num_classes = 10

    def __init__(self) -> None:
        # Imported here: scikit-learn is slow to import and only this source needs it.
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # Pixel values are ink counts 0-16; scaling by 255/16 gives the 8-bit range the transforms expect.
        self.images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
        self.labels = bunch.target.astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])
