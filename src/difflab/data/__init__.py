"""Datasets and the LightningDataModule that feeds diffusion training batches in [-1, 1]."""

from difflab.data.datamodule import ImageDataModule
from difflab.data.errors import DataError, UnreadableImagesWarning
from difflab.data.latent_datamodule import LatentDataModule

__all__ = ["DataError", "ImageDataModule", "LatentDataModule", "UnreadableImagesWarning"]
