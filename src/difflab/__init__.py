"""difflab: train, sample, edit and evaluate diffusion models."""

__version__ = "0.1.0"
