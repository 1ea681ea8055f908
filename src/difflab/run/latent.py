"""autoencoder=<checkpoint or folder> on a diffusion recipe: the run's data becomes the autoencoder's latents
(data.LatentDataModule) and its denoiser is built for the latent shape."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict


def use_latents(cfg: DictConfig) -> None:
    """Complete `cfg` in place for latent diffusion when cfg.autoencoder is set; one-line errors for an autoencoder
    run given an autoencoder, a latent recipe without its autoencoder and an image size f does not divide."""
    if cfg.get("autoencoder_required") and not cfg.get("autoencoder"):  # a latent recipe given none
        raise ValueError(
            "this recipe trains on an autoencoder's latents: give autoencoder=<an autoencoder run or a diffusers "
            "AutoencoderKL folder>"
        )
    if not cfg.get("autoencoder"):
        return
    from ..autoencoder_checkpoint import load_autoencoder
    from ..checkpoint_config import LATENT_DATA

    if cfg.get("task") == "autoencoder":
        raise ValueError(
            "autoencoder= trains a diffusion model on latents: pick a denoiser model=, not an autoencoder"
        )
    # The U-Net would meet latents beside a low-res picture at step 1.
    if cfg.data.get("condition") == "superres":
        raise ValueError(
            "data.condition=superres trains in pixels (SR3: the low-res picture beside the noisy image), not on an "
            "autoencoder's latents: drop autoencoder= for super-resolution"
        )
    net = load_autoencoder(cfg.autoencoder).net
    given = Path(str(cfg.autoencoder)).expanduser()
    # Recorded as the folder it names, not as typed: sample.py may start from another folder.
    if given.exists():
        with open_dict(cfg):
            cfg.autoencoder = str(given.resolve())
    channels = int(cfg.data.channels)
    if net.in_channels != channels:  # its first convolution would meet the images at step 1
        raise ValueError(
            f"the autoencoder encodes {net.in_channels}-channel images, not data.channels={channels}: give "
            f"data.channels={net.in_channels}, or an autoencoder trained on {channels}-channel images"
        )
    size = int(cfg.data.image_size)
    if size % net.down_factor:
        raise ValueError(
            f"the autoencoder's down factor {net.down_factor} does not divide data.image_size={size}"
        )
    check_patches_fit(cfg, size, net.down_factor)
    check_unet_halvings_fit(cfg, size, net.down_factor)
    check_typed_shape_fits(cfg, size, net.down_factor, net.latent_channels)
    with open_dict(cfg):
        cfg.data._target_ = LATENT_DATA
        cfg.data.autoencoder = str(cfg.autoencoder)
        cfg.data.latent_cache_dir = cfg.get("latent_cache_dir")
        cfg.model.in_channels = net.latent_channels
        cfg.model.image_size = size // net.down_factor
    fit_edm_to_latents(cfg)


def check_typed_shape_fits(cfg: DictConfig, size: int, factor: int, channels: int) -> None:
    """The denoiser's input is the latents: a typed model.image_size or model.in_channels that contradicts them is
    refused (before, overwritten without a word); a recipe's value is overwritten, as it follows the pixels."""
    from .typed import typed_keys_under

    typed = typed_keys_under(cfg, "model")
    latent = size // factor
    image_size, in_channels = cfg.model.get("image_size"), cfg.model.get("in_channels")
    if "model.image_size" in typed and image_size != latent:
        wanted = (
            f"give data.image_size={image_size * factor} for {image_size}x{image_size} latents, or "
            if (isinstance(image_size, int) and image_size > 0)
            else ""
        )
        raise ValueError(
            f"model.image_size={image_size} contradicts the latents' size {latent} (data.image_size={size} / the "
            f"autoencoder's down factor {factor}): {wanted}drop model.image_size (it follows the latents)"
        )
    if "model.in_channels" in typed and in_channels != channels:
        raise ValueError(
            f"model.in_channels={in_channels} contradicts the autoencoder's {channels} latent channels: drop "
            f"model.in_channels (it follows the latents), or give an autoencoder with {in_channels} latent channels"
        )


def fit_edm_to_latents(cfg: DictConfig) -> None:
    """EDM's σ_data is the std of the data it denoises: 0.5 for images in [-1, 1] (its config's value), 1 for
    latents scaled to unit std (LDM's scale factor). Left at 0.5, c_skip, c_out and the loss weight would be those
    of data half as spread. A value typed on the command line is kept."""
    from .formulation_checks import formulation_name
    from .typed import typed_keys_under

    node = cfg.get("formulation")
    if (
        node is None
        or formulation_name(node) != "edm"
        or "formulation.sigma_data" in typed_keys_under(cfg, "formulation")
    ):
        return
    with open_dict(cfg):
        cfg.formulation.sigma_data = 1.0


def check_patches_fit(cfg: DictConfig, size: int, factor: int) -> None:
    """A DiT cuts the latents, not the images, into patches: say so, or its own error names a size never typed."""
    patch = cfg.model.get("patch_size")
    latent = size // factor
    if isinstance(patch, int) and patch > 0 and latent % patch:
        raise ValueError(
            f"model.patch_size={patch} does not divide the latents' size {latent} (data.image_size={size} / the "
            f"autoencoder's down factor {factor}): pick a patch size dividing {latent} or a larger data.image_size"
        )


def check_unet_halvings_fit(cfg: DictConfig, size: int, factor: int) -> None:
    """A U-Net halves the latents, not the images: say so, or its own error names a size never typed."""
    mults = cfg.model.get("channel_mults")
    if not mults:
        return
    latent, halvings = size // factor, len(mults) - 1
    unet = 2**halvings
    if latent % unet:
        times = "once" if halvings == 1 else f"{halvings} times"
        raise ValueError(
            f"the latents' size {latent} (data.image_size={size} / the autoencoder's down factor {factor}) cannot be "
            f"halved {times} by the U-Net (model.channel_mults={list(mults)}): pick a data.image_size "
            f"that is a multiple of {unet * factor}, or fewer channel_mults"
        )


def check_resumed_autoencoder(cfg: DictConfig, ckpt: dict, path: object) -> None:
    """A latent run resumed with another autoencoder (or its run resumed since, moving its last.ckpt on): one
    line now, before the data is encoded with it (minutes), not once Lightning restores the checkpoint."""
    from ..autoencoder_checkpoint import load_autoencoder
    from ..checkpoint_file import LATENT_RECORD_KEY
    from ..latent_space import autoencoder_mismatch

    record = ckpt.get(LATENT_RECORD_KEY) or {}
    wanted = record.get("autoencoder_hash")
    if not cfg.get("autoencoder") or not wanted:
        return
    found = load_autoencoder(cfg.autoencoder).weights_hash
    if found != wanted:
        recorded = record.get("autoencoder_path")
        raise ValueError(autoencoder_mismatch(cfg.autoencoder, found, f"checkpoint {path}", wanted, recorded))


def check_resumed_autoencoder_found(cfg: DictConfig, run_dir: Path) -> None:
    """A latent run resumed while its autoencoder is not where the run has it (moved, deleted): the line sample.py
    and evaluate.py give, naming the autoencoder's hash and autoencoder=, before the autoencoder is read. Before,
    "autoencoder not found: <path>", which said neither what was missing nor how to give a copy."""
    given = cfg.get("autoencoder")
    if not given or Path(str(given)).expanduser().exists():
        return
    from ..checkpoint_file import LATENT_RECORD_KEY, read_checkpoint_file
    from ..latent_space import autoencoder_missing
    from ..runs.resume import resume_path

    resume = resume_path(cfg.get("ckpt_path"), run_dir)
    if resume is None:
        return
    try:
        record = read_checkpoint_file(resume, mmap=True).get(LATENT_RECORD_KEY) or {}
    # A checkpoint it cannot read: the resume's own reading says why.
    except (OSError, ValueError, RuntimeError):
        return
    wanted = record.get("autoencoder_hash")
    if wanted:
        raise ValueError(autoencoder_missing(str(wanted), f"checkpoint {resume}", given))
