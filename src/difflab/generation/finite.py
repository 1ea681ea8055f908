"""Refuse generated images that are not finite, before anything is written."""

from __future__ import annotations

from typing import Any

import torch


def check_finite(images: torch.Tensor, ckpt: Any) -> None:
    """Refuse samples with NaN or inf (they would be written as black images without a word)."""
    bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
    if bad:
        raise ValueError(
            f"{bad} of {len(images)} samples are not finite (NaN/inf): the weights in {ckpt} are broken "
            "(did training diverge?); nothing was written"
        )
