"""Datasets and the LightningDataModule that feeds diffusion training batches in [-1, 1]."""

from difflab.data.datamodule import ImageDataModule
from difflab.data.errors import DataError, UnreadableImagesWarning

__all__ = ["DataError", "ImageDataModule", "UnreadableImagesWarning"]
