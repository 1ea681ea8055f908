"""Write a difflab DiT as a diffusers DiTPipeline folder: transformer/ (DiTTransformer2DModel) and scheduler/
(DDPMScheduler). A pixel-space DiT has no VAE: model_index.json lists none, DiTPipeline.from_pretrained(folder,
vae=None) loads it, and as DiTPipeline's sampling decodes latents through a VAE, the transformer and scheduler
are used in your own loop (README "Export")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..diffusion import NoiseSchedule
from .diffusers_folder import require_diffusers
from .diffusers_mapping import scheduler_config
from .dit_mapping import diffusers_dit


def write_dit_pipeline(
    net: nn.Module,
    args: Mapping[str, Any],
    schedule: NoiseSchedule,
    prediction_type: str,
    out: Path,
    vae: Any = None,
) -> None:
    """A DiTPipeline folder (model_index.json, transformer/, scheduler/, and vae/ when a latent model's diffusers
    AutoencoderKL `vae` is given; safetensors) holding `net`'s weights; `args` are the DiT's constructor arguments
    (see dit_arguments); `out` must exist and be empty."""
    diffusers = require_diffusers("format=diffusers")
    state = {k: v.detach().cpu().float() for k, v in net.state_dict().items()}
    transformer = diffusers_dit(state, args)
    scheduler = diffusers.DDPMScheduler(
        **scheduler_config(schedule.betas, prediction_type, latent=vae is not None)
    )
    pipeline = diffusers.DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
    # Without a VAE diffusers logs "self.vae=None of type <class 'NoneType'> cannot be saved." on a folder it
    # writes rightly (model_index.json lists no VAE): nothing for a user to act on.
    verbosity = diffusers.utils.logging.get_verbosity()
    if vae is None:
        diffusers.utils.logging.set_verbosity_error()
    try:
        pipeline.save_pretrained(out, safe_serialization=True)
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
