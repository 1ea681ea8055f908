"""The run module: what the entry points call. Only this layer (and the entry points) reads Hydra configs."""

from .sample import sample
from .train import train

__all__ = ["sample", "train"]
