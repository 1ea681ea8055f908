"""Editing pictures with an unconditional model, no retraining: RePaint inpainting and SDEdit img2img."""

from .img2img import check_strength, img2img, sdedit, strength_timesteps
from .inpaint import expand_mask, repaint, repaint_sigmas
from .jump_schedule import jump_schedule, repaint_model_calls

__all__ = [
    "check_strength",
    "expand_mask",
    "img2img",
    "jump_schedule",
    "repaint",
    "repaint_sigmas",
    "repaint_model_calls",
    "sdedit",
    "strength_timesteps",
]
