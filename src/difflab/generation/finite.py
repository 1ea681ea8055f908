"""Refuse generated images that are not finite, before anything is written."""

from __future__ import annotations

from typing import Any

import torch


def check_finite(images: torch.Tensor, ckpt: Any, batch: tuple[int, int, int] | None = None) -> None:
    """Refuse samples with NaN or inf (they would be written as black images without a word). `batch`: (first,
    last, count) when `images` are samples first..last of count, which the message then names."""
    bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
    if bad:
        where = ""
        if batch is not None and len(images) < batch[2]:
            where = f" (the batch of samples {batch[0]}-{batch[1]} of {batch[2]})"
        raise ValueError(
            f"{bad} of {len(images)} samples are not finite (NaN/inf){where}: the weights in {ckpt} are broken "
            "(did training diverge?); nothing was written"
        )
