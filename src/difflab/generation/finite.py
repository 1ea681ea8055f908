"""Refuse generated images that are not finite, before anything is written."""

from __future__ import annotations

from typing import Any

import torch

# Beyond any classifier-free or autoguidance scale in use (EDM2 and Imagen reach ~10): samples that are not
# finite at such a guidance are first of all its doing.
LARGE_GUIDANCE = 50.0


def check_finite(
    images: torch.Tensor,
    ckpt: Any,
    batch: tuple[int, int, int] | None = None,
    guidance: float = 1.0,
    outcome: str = "nothing was written",
) -> None:
    """Refuse samples with NaN or inf (they would be written as black images without a word). `batch`: (first,
    last, count) when `images` are samples first..last of count, which the message then names; `guidance`: the
    scale they were made at, named as the likely cause when it is very large; `outcome`: what the caller
    leaves undone, the message's last words."""
    bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
    if bad:
        where = ""
        if batch is not None and len(images) < batch[2]:
            where = f" (the batch of samples {batch[0]}-{batch[1]} of {batch[2]})"
        # Before, blamed on the weights alone.
        cause = guidance_too_large(guidance) or f"the weights in {ckpt} are broken (did training diverge?)"
        raise ValueError(
            f"{bad} of {len(images)} samples are not finite (NaN/inf){where}: {cause}; {outcome}"
        )


def guidance_too_large(guidance: float) -> str | None:
    """What to name as the cause of samples that are not finite at `guidance`: the guidance itself where it is
    beyond any scale in use, else None (the weights are then the suspect)."""
    if abs(float(guidance)) > LARGE_GUIDANCE:
        return f"guidance={guidance:g} pushes them out of range (usual scales are 1-10)"
    return None
