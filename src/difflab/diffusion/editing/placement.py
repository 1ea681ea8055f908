"""Put the picture to edit where the model lives (device and dtype), as the samplers do for x_T."""

from __future__ import annotations

from torch import Tensor

from ..samplers.base import Denoiser, model_device_dtype


def place(image: Tensor, model: Denoiser) -> Tensor:
    """image on the model's device and dtype; a plain callable keeps the image's (float32 if not floating)."""
    placement = model_device_dtype(model)
    if placement is not None:
        return image.to(*placement)
    return image if image.is_floating_point() else image.float()
