"""superres(cfg): super-resolve low-resolution pictures with an SR3 checkpoint (sample.py mode=superres).

Inputs are pictures at the model's low resolution (image_size / sr_factor, as the training pairs were made); a
picture of another size is brought to it exactly as training data is (cover, centre-crop, bicubic with
antialiasing) with one warning for the batch, so a high-resolution picture is downsampled first. Each input
gets n outputs at the model's size; the grid shows per row: input (nearest-upsampled) | bicubic | n outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ..checkpoint import LoadedModel
from ..data.conditions import superres_conditions
from ..diffusion import Denoiser, Sampler
from ..diffusion.auto_batch import generation_batch_size
from ..diffusion.data_consistency import DataConsistent, LowResProjection
from ..diffusion.generate import generate, generation_steps
from ..diffusion.samplers.base import model_device_dtype
from ..diffusion.superres import nearest_upsample, upsample
from ..io.images import enlarge, grid_of, save_png, save_samples
from ..io.load_images import load_images
from ..progress import Progress
from .common import batch_size_for, build_sampler, check_finite, log_written, output_folder, write_json
from .rules import require
from .threads import generation_threads

log = logging.getLogger("difflab")

SUPERRES = "superres"


def check_superres_request(cfg: DictConfig) -> None:
    """What mode=superres needs, checked before the checkpoint is loaded."""
    require(cfg, "image", "mode=superres needs image=<low-resolution picture or folder of pictures>")
    if cfg.get("labels") is not None:
        raise ValueError(f"labels={cfg.labels} given, but mode=superres conditions on image= only")
    project = OmegaConf.select(cfg, "superres.consistency", default=False)
    if not isinstance(project, bool):
        raise ValueError(f"superres.consistency={project!r} must be true or false")
    if float(cfg.get("guidance", 1.0)) != 1.0:
        raise ValueError(
            f"guidance={cfg.guidance} has no effect with mode=superres: the low-res image is never dropped, "
            "so there is no unconditional branch; drop guidance="
        )


def consistency(cfg: DictConfig) -> bool:
    """superres.consistency: whether outputs are projected so that they downsample exactly to their input."""
    return bool(OmegaConf.select(cfg, "superres.consistency", default=False))


def sr_factor(loaded: LoadedModel) -> int:
    """The checkpoint's upscaling factor (the data's sr_factor it was trained with)."""
    return int(loaded.config["data"].get("sr_factor", 4))


def low_res_shape(loaded: LoadedModel) -> tuple[int, int, int]:
    c, h, w = loaded.sample_shape
    factor = sr_factor(loaded)
    return (c, h // factor, w // factor)


def super_resolve(
    sampler: Sampler,
    net: Denoiser,
    low: Tensor,
    size: int,
    n: int = 1,
    seed: int = 0,
    batch_size: int | str | None = 64,
    precision: str = "fp32",
    consistency: bool = False,
) -> Tensor:
    """n outputs (size x size) for each low-res picture of `low` (M, C, h, w) in [-1, 1]; output k is of
    input k // n and depends only on (seed, k), like any sample. batch_size "auto": see generation_batch_size.
    Progress is shown as sample.py shows it (sampler steps, images/s). consistency=True projects every x̂_0 onto
    down(x̂_0) = its input (diffusion.data_consistency)."""
    conditions = superres_conditions(low, size, n)
    wrap = consistent_with(low, size, n, sampler) if consistency else None
    indices: Sequence[int] = range(len(low) * n)
    shape = (low.shape[1], size, size)
    batch_size = generation_batch_size(
        batch_size, net, len(indices), shape, conditions.cond_for, precision=precision
    )
    count, steps = len(indices), generation_steps(sampler, len(indices), batch_size)
    with Progress(
        f"super-resolving {count} images", steps, "steps", per_unit=("images", count / max(steps, 1))
    ) as progress:
        return generate(
            sampler,
            net,
            indices,
            shape,
            seed,
            batch_size,
            conditions.cond_for,
            on_step=progress.advance,
            precision=precision,
            wrap=wrap,
        )


def consistent_with(
    low: Tensor, size: int, n: int, sampler: Sampler
) -> Callable[[Denoiser, Sequence[int]], Denoiser]:
    """generate's wrap: the denoiser of samples `indices` made consistent with their inputs low[k // n]."""
    factor = size // low.shape[-1]

    def wrap(denoiser: Denoiser, indices: Sequence[int]) -> Denoiser:
        device, dtype = model_device_dtype(denoiser) or (low.device, low.dtype)
        rows = torch.as_tensor(list(indices), dtype=torch.long) // n
        projection = LowResProjection(low[rows].to(device, dtype), factor)
        return DataConsistent(
            denoiser, sampler.schedule, projection, sampler.prediction_type, sampler.clip_x0
        )

    return wrap


def _comparison_tiles(low: Tensor, results: Tensor, n: int, size: int) -> Tensor:
    """One row per input: the input nearest-upsampled | its bicubic upsampling | its n outputs."""
    shown, bicubic = nearest_upsample(low, size), upsample(low, size)
    rows = [
        torch.cat([shown[i : i + 1], bicubic[i : i + 1], results[i * n : (i + 1) * n]])
        for i in range(len(low))
    ]
    return torch.cat(rows)


def superres(cfg: DictConfig, loaded: LoadedModel) -> Path:
    """Write cfg.n super-resolutions of each picture in cfg.image to cfg.out."""
    check_superres_request(cfg)
    if loaded.condition != SUPERRES:
        raise ValueError(
            f"mode=superres needs a super-resolution checkpoint (trained with data.condition=superres); "
            f"{cfg.ckpt} was trained with data.condition={loaded.condition}"
        )
    n, size = int(cfg.n), loaded.sample_shape[-1]
    pictures = load_images(cfg.image, low_res_shape(loaded))
    sampler = build_sampler(cfg, loaded)
    count, cond_for = len(pictures.images) * n, superres_conditions(pictures.images, size, n).cond_for
    batch_size = batch_size_for(cfg, loaded, count, cond_for)
    with output_folder(cfg.out, SUPERRES) as out:
        log.info(
            "superres: %d picture(s) %s -> %d×%d, %d outputs each with %r%s",
            len(pictures.paths),
            "×".join(str(s) for s in pictures.images.shape[-2:]),
            size,
            size,
            n,
            sampler,
            ", projected onto down(output) = input" if consistency(cfg) else "",
        )
        with generation_threads(cfg, loaded, count, batch_size, cond_for):
            results = super_resolve(
                sampler,
                loaded.net,
                pictures.images,
                size,
                n,
                int(cfg.seed),
                batch_size,
                cfg.get("precision", "fp32"),
                consistency(cfg),
            ).cpu()
        check_finite(results, cfg.ckpt)
        written = save_samples(results, out, nrow=n)
        # save_samples' grid shows the outputs only; replace it with the side-by-side comparison.
        tiles = _comparison_tiles(pictures.images, results, n, size)
        save_png(enlarge(grid_of(tiles, nrow=n + 2)), written["grid"])
        settings = {
            "mode": SUPERRES,
            "ckpt": str(cfg.ckpt),
            "image": str(cfg.image),
            "inputs": [str(p) for p in pictures.paths],
            "input_size": list(low_res_shape(loaded)[1:]),
            "output_size": [size, size],
            "sr_factor": sr_factor(loaded),
            "n": n,
            "order": "result k is a super-resolution of input k // n",
            "grid": "per row: input (nearest-upsampled) | bicubic | n results",
            "seed": int(cfg.seed),
            "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
            "nfe": sampler.nfe,
            "consistency": consistency(cfg),
            "precision": cfg.get("precision", "fp32"),
            "weights": loaded.weights,
            "global_step": loaded.global_step,
        }
        write_json(settings, out / "settings.json")
    log_written(len(results), written)
    return out
