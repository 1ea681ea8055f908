"""What an autoencoder run (task=autoencoder) is refused for, in one line before anything is written: callbacks
that need a diffusion model, and an image size its down factor does not divide."""

from __future__ import annotations

from omegaconf import DictConfig

from .typed import typed_under

# Callbacks that sample from (or average) a diffusion model; conf/callbacks/autoencoder.yaml has none of them.
DIFFUSION_ONLY_CALLBACKS = ("sample_grid", "fid", "ema", "phema")
# Settings only a diffusion model reads: typed for an autoencoder run, they were taken and ignored without a word.
DIFFUSION_ONLY_SETTINGS = (
    "formulation",
    "schedule",
    "prediction_type",
    "sampler",
    "data.condition",
    "cond_drop_prob",
)


def check_autoencoder_run(cfg: DictConfig) -> None:
    """A one-line ValueError for an autoencoder run configured with diffusion-only callbacks or an image size
    that 2^(levels - 1) does not divide; nothing for a diffusion run."""
    if cfg.get("task") != "autoencoder":
        return
    typed = [key for key in DIFFUSION_ONLY_SETTINGS if typed_under(cfg, key)]
    if typed:
        given = typed_under(cfg, typed[0])[0]
        raise ValueError(
            f"{given}: an autoencoder run trains no diffusion model, so nothing reads it here; drop it (it belongs "
            "to the latent diffusion run that uses this autoencoder, autoencoder=<this run>)"
        )
    callbacks = cfg.get("callbacks") or {}
    found = [name for name in DIFFUSION_ONLY_CALLBACKS if callbacks.get(name) is not None]
    if found:
        raise ValueError(
            f"an autoencoder run (model={cfg.model.get('_target_', '?').rsplit('.', 1)[-1]}) cannot use the "
            f"callbacks {', '.join(found)}, which need a diffusion model: add callbacks=autoencoder"
        )
    factor = 2 ** (len(cfg.model.block_out_channels) - 1)
    size = int(cfg.data.image_size)
    if size % factor:
        raise ValueError(
            f"the autoencoder's down factor {factor} does not divide data.image_size={size}: choose an image size "
            f"that is a multiple of {factor}, or fewer model.block_out_channels"
        )
    check_discriminator_fits(cfg.get("autoencoder_module") or {}, size)
    latent = cfg.model.get("latent_channels")
    if isinstance(latent, int) and latent < 1:  # torch's "weight of size [0, 512, 3, 3]" at the first step
        raise ValueError(f"model.latent_channels={latent}: an autoencoder needs at least 1 latent channel")


def check_discriminator_fits(module: DictConfig | dict, size: int) -> None:
    """The patch discriminator halves the image `disc_layers` times, then two 4x4 convolutions take 3 pixels off;
    on smaller images torch fails at the first adversarial step ("Kernel size can't be greater than …")."""
    layers = module.get("disc_layers", 3)
    if not module.get("disc_weight") or not isinstance(layers, int) or layers < 1:
        return
    if size // 2**layers < 3:
        smallest = 3 * 2**layers
        raise ValueError(
            f"autoencoder_module.disc_layers={layers} needs images of at least {smallest}x{smallest} (its patch map "
            f"would be empty at data.image_size={size}): use fewer disc_layers or larger images"
        )
