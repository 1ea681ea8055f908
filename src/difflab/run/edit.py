"""edit(cfg): inpaint (RePaint) or img2img (SDEdit) pictures with a checkpoint's model.

A class-conditional model edits towards classes (labels=, guidance=): the n results of each picture are
spread over the labels in equal blocks, as sample.py spreads n samples, and every model call is the
classifier-free guided one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ..checkpoint import LoadedModel
from ..data.conditions import GenerationConditions
from ..diffusion import SampleGenerators
from ..diffusion.editing import check_strength, img2img, repaint, repaint_model_calls, strength_timesteps
from ..diffusion.guidance import guided_for
from ..diffusion.precision import with_precision
from ..io.images import enlarge, grid_of, save_png, save_samples
from ..io.load_images import load_images, load_masks
from .common import batch_size_for, build_sampler, check_finite, log_written, output_folder, write_json
from .rules import require
from .threads import generation_threads

log = logging.getLogger("difflab")

EDIT_MODES = ("inpaint", "img2img")
# A batch of pictures (N, C, H, W), their masks (or None) and each result's generator -> the edited pictures.
Editor = Callable[[Tensor, Tensor | None, SampleGenerators], Tensor]


def _editor(
    cfg: DictConfig, loaded: LoadedModel, conditions: GenerationConditions
) -> tuple[Editor, dict[str, Any]]:
    """The function that edits one batch, and the settings that describe it. Each batch's denoiser carries
    the conditions of its results (their indices are those of the batch's generators)."""
    guidance = float(cfg.get("guidance", 1.0))
    net = with_precision(loaded.net, cfg.get("precision", "fp32"))  # bf16: the network's forward only

    def model(g: SampleGenerators) -> Any:
        return guided_for(net, conditions.cond_for, g.indices, guidance, conditions.negative_for)

    if cfg.mode == "inpaint":
        opts = {key: int(cfg.inpaint[key]) for key in ("steps", "jump_length", "jump_n_sample")}

        def inpaint(images: Tensor, masks: Tensor | None, g: SampleGenerators) -> Tensor:
            return repaint(
                model(g),
                loaded.schedule,
                images,
                masks,
                prediction_type=loaded.prediction_type,
                generator=g,
                **opts,
            )

        return inpaint, {"inpaint": opts, "nfe": repaint_model_calls(**opts)}

    sampler = build_sampler(cfg, loaded)
    strength = float(cfg.strength)
    timesteps = strength_timesteps(sampler.timesteps, loaded.schedule.timesteps, strength)

    def sdedit(images: Tensor, masks: Tensor | None, g: SampleGenerators) -> Tensor:
        return img2img(sampler, model(g), images, strength, generator=g)

    settings = {
        "strength": strength,
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "start_timestep": int(timesteps[0]),
        "nfe": len(timesteps),
    }
    return sdedit, settings


def _run(editor: Editor, images: Tensor, masks: Tensor | None, n: int, seed: int, batch_size: int) -> Tensor:
    """n edits of every picture, in batches; result k is an edit of picture k // n."""
    images = images.repeat_interleave(n, 0)
    if masks is not None:
        masks = masks.repeat_interleave(n, 0) if masks.shape[0] > 1 else masks.expand(len(images), -1, -1, -1)
    out = []
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        # One generator per result index: result k is the same at any batch size and on any device.
        generators = SampleGenerators(seed, range(start, stop))
        out.append(editor(images[start:stop], None if masks is None else masks[start:stop], generators).cpu())
    return torch.cat(out)


def _comparison_tiles(images: Tensor, masks: Tensor | None, results: Tensor, n: int) -> Tensor:
    """Tiles for grid.png, one row per picture: input | input with the hole grey (inpaint) | n results."""
    rows = []
    for i, image in enumerate(images):
        row = [image[None]]
        if masks is not None:
            hole = (masks[i if masks.shape[0] > 1 else 0] > 0.5).expand_as(image)
            row.append(torch.where(hole, torch.zeros_like(image), image)[None])  # 0 is mid-grey in [-1, 1]
        row.append(results[i * n : (i + 1) * n])
        rows.append(torch.cat(row))
    return torch.cat(rows)


def check_edit_request(cfg: DictConfig) -> None:
    """The inputs an edit mode needs, checked before the checkpoint is loaded."""
    if cfg.mode not in EDIT_MODES:
        raise ValueError(f"unknown edit mode {cfg.mode!r}; choose one of {', '.join(EDIT_MODES)}")
    require(cfg, "image", f"mode={cfg.mode} needs image=<picture or folder of pictures>")
    if cfg.mode == "inpaint":
        require(
            cfg, "mask", "mode=inpaint needs mask=<PNG the picture's size, white = generate, or a folder>"
        )
    else:
        check_strength(cfg.strength)


def per_result(per_picture: GenerationConditions | None, n: int) -> GenerationConditions:
    """The conditions of every result from those of one picture's n results: result k edits picture k // n
    towards condition k % n (labels or prompts spread over the n results, the same for every picture)."""
    if per_picture is None or per_picture.cond_for is None:
        return GenerationConditions(None)

    def remap(cond_for: Any) -> Any:
        return None if cond_for is None else (lambda indices: cond_for([i % n for i in indices]))

    return GenerationConditions(remap(per_picture.cond_for), negative_for=remap(per_picture.negative_for))


def edit(cfg: DictConfig, loaded: LoadedModel, per_picture: GenerationConditions | None = None) -> Path:
    """Write cfg.n edits of each picture in cfg.image (mode inpaint or img2img) to cfg.out. `per_picture`: the
    conditions (labels, prompts) of one picture's n results, the same for every picture (None: none)."""
    check_edit_request(cfg)
    n = int(cfg.n)
    pictures = load_images(cfg.image, loaded.sample_shape)
    masks = load_masks(cfg.mask, pictures) if cfg.mode == "inpaint" else None
    conditions = per_result(per_picture, n)
    guided = conditions.cond_for is not None
    editor, settings = _editor(cfg, loaded, conditions)
    with output_folder(cfg.out, cfg.mode, cfg.paths.root_dir) as out:
        log.info(
            "%s: %d picture(s) × %d edits, %d model calls each",
            cfg.mode,
            len(pictures.paths),
            n,
            settings["nfe"],
        )
        count = len(pictures.images) * n
        batch_size = batch_size_for(cfg, loaded, count, conditions.cond_for, conditions.negative_for)
        with generation_threads(cfg, loaded, count, batch_size, conditions.cond_for, conditions.negative_for):
            results = _run(editor, pictures.images, masks, n, int(cfg.seed), batch_size)
        check_finite(results, cfg.ckpt)
        written = save_samples(results, out, nrow=n)
        # save_samples' grid shows the results only; replace it with the side-by-side comparison.
        tiles = _comparison_tiles(pictures.images, masks, results, n)
        save_png(enlarge(grid_of(tiles, nrow=tiles.shape[0] // len(pictures.paths))), written["grid"])
        settings = {
            "mode": cfg.mode,
            "ckpt": str(cfg.ckpt),
            "image": str(cfg.image),
            "mask": None if masks is None else str(cfg.mask),
            "inputs": [str(p) for p in pictures.paths],
            "n": n,
            "order": "result k is an edit of input k // n" + (" towards condition k % n" if guided else ""),
            **({"guidance": float(cfg.guidance)} if guided else {}),
            **({"labels": per_picture.labels} if guided and per_picture.labels else {}),
            **({"prompts": per_picture.prompts} if guided and per_picture.prompts else {}),
            "seed": int(cfg.seed),
            "precision": cfg.get("precision", "fp32"),
            **settings,
            "weights": loaded.weights,
            "global_step": loaded.global_step,
        }
        write_json(settings, out / "settings.json")
    log_written(len(results), written)
    return out
