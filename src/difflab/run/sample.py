"""sample(cfg): generate images from a checkpoint with any sampler and write PNGs, a grid and an .npz."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..checkpoint import LoadedModel, check_contradictions, load_model
from ..data.conditions import GenerationConditions
from ..diffusion.conditioning import label_condition
from ..diffusion.generate import generate, generation_steps
from ..diffusion.precision import PRECISIONS
from ..io.images import save_samples
from ..pipeline import requested_labels
from ..progress import Progress
from .common import (
    batch_size_for,
    build_sampler,
    check_finite,
    log_written,
    output_folder,
    pick_device,
    set_cpu_threads,
    write_json,
)
from .edit import EDIT_MODES, check_edit_request, edit
from .prompts import text_conditions
from .rules import check_values, number, one_of, or_auto, require, whole
from .superres import SUPERRES, check_superres_request, superres
from .threads import generation_threads

log = logging.getLogger("difflab")

MODES = ("sample", *EDIT_MODES, SUPERRES)

# Values sample.py and its edit modes take, checked before anything is loaded or written.
RULES = {
    "n": whole(1),
    "batch_size": or_auto(whole(1)),
    "precision": one_of(*PRECISIONS),
    "seed": whole(0),
    "cpu_threads": or_auto(whole(1)),
    "sampler.steps": whole(1, nullable=True),
    "sampler.eta": number(0.0),
    "sampler.clip_x0": number(0.0, above=True, nullable=True),
    "inpaint.steps": whole(1),
    "inpaint.jump_length": whole(1),
    "inpaint.jump_n_sample": whole(1),
    "guidance": number(0.0),
}

# Keys a user may pass to sample.py only to check them against the checkpoint (null: take the checkpoint's).
CHECKED_KEYS = {
    "image_size": "data.image_size",
    "channels": "data.channels",
    "prediction_type": "prediction_type",
}


def check_against_checkpoint(cfg: DictConfig, loaded: LoadedModel) -> None:
    """Overrides that contradict the stored model are errors: the checkpoint fixes the model."""
    wanted = {key: cfg.get(key) for key in CHECKED_KEYS if cfg.get(key) is not None}
    for group in ("model", "schedule"):
        given = cfg.get(group)
        if given is None:
            continue
        # Values that interpolate other groups (model.in_channels: ${data.channels}) are not compared.
        for key, value in OmegaConf.to_container(given, resolve=False).items():
            if not key.startswith("_") and not (isinstance(value, str) and value.startswith("${")):
                wanted[f"{group}.{key}"] = value
    check_contradictions(
        wanted,
        loaded.config,
        cfg.ckpt,
        "drop those overrides (sample.py takes them from the checkpoint)",
        CHECKED_KEYS,
    )


def requested_conditions(cfg: DictConfig, loaded: LoadedModel, n: int) -> GenerationConditions:
    """The conditions of samples 0..n-1 that the command asks for, checked against what the model takes."""
    if loaded.condition == SUPERRES:
        raise ValueError(
            f"{cfg.ckpt} is a super-resolution model: use mode=superres image=<low-res picture or folder>"
        )
    if loaded.condition == "text":
        return text_conditions(cfg, loaded, n)
    for key in ("prompt", "negative_prompt"):
        if cfg.get(key) is not None:
            kinds = {None: "an unconditional", "labels": "a class-conditional"}
            kind = kinds.get(loaded.condition, f"a {loaded.condition}-conditioned")
            hint = "" if loaded.condition != "labels" else " (give labels= instead)"
            raise ValueError(f"{key}={cfg.get(key)!r} given, but {cfg.ckpt} holds {kind} model{hint}")
    spread, wanted = requested_labels(
        loaded.condition, loaded.num_classes, cfg.get("labels"), cfg.get("guidance", 1.0), n, cfg.ckpt
    )
    if spread is None:
        return GenerationConditions(None)
    return GenerationConditions(label_condition(spread), math.ceil(n / len(wanted)), spread)


def load_checked_model(cfg: DictConfig) -> LoadedModel:
    """The checkpoint's model on the chosen device, after every value and override has been checked."""
    require(
        cfg,
        "ckpt",
        "sample.py needs ckpt=<checkpoint>, e.g. ckpt=outputs/train/<date>/<time>/checkpoints/last.ckpt",
    )
    check_values(cfg, RULES)
    set_cpu_threads(cfg)
    loaded = load_model(cfg.ckpt, pick_device(cfg.device), cfg.get("allowed_targets") or ())
    check_against_checkpoint(cfg, loaded)
    return loaded


def sample(cfg: DictConfig) -> Path:
    """Write cfg.n samples from checkpoint cfg.ckpt to cfg.out (default: a new outputs/sample/<date>/<time>).

    cfg.mode = inpaint or img2img edits the pictures in cfg.image instead (see run/edit.py); cfg.mode = superres
    super-resolves them with an SR3 checkpoint (see run/superres.py).
    """
    mode = cfg.get("mode", "sample")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == SUPERRES:
        check_superres_request(cfg)
    elif mode != "sample":
        check_edit_request(cfg)
    loaded = load_checked_model(cfg)
    if mode == SUPERRES:
        return superres(cfg, loaded)
    conditions = requested_conditions(cfg, loaded, int(cfg.n))
    if mode != "sample":
        return edit(cfg, loaded, conditions)
    sampler = build_sampler(cfg, loaded)
    with output_folder(cfg.out, "sample", cfg.paths.root_dir) as out:
        log.info(
            "sampling %d images with %r (%s weights, step %d)",
            cfg.n,
            sampler,
            loaded.weights,
            loaded.global_step,
        )
        # The same generation as difflab.load(...).sample(...): sample i from (seed, i) and its condition.
        n = int(cfg.n)
        batch_size = batch_size_for(cfg, loaded, n, conditions.cond_for, conditions.negative_for)
        steps = generation_steps(sampler, n, batch_size)
        threads = generation_threads(cfg, loaded, n, batch_size, conditions.cond_for, conditions.negative_for)
        progress = Progress(f"sampling {n} images", steps, "steps", per_unit=("images", n / steps))
        with threads as cpu_threads, progress:
            images = generate(
                sampler,
                loaded.net,
                range(n),
                loaded.sample_shape,
                cfg.seed,
                batch_size,
                conditions.cond_for,
                float(cfg.get("guidance", 1.0)),
                conditions.negative_for,
                on_step=progress.advance,
                precision=cfg.get("precision", "fp32"),
            )
        check_finite(images, cfg.ckpt)
        written = save_samples(images, out, nrow=conditions.nrow)
        settings = {
            "ckpt": str(cfg.ckpt),
            "n": int(cfg.n),
            "seed": int(cfg.seed),
            "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
            "nfe": sampler.nfe,
            "precision": cfg.get("precision", "fp32"),
            "batch_size": batch_size,
            "cpu_threads": cpu_threads,
            "guidance": float(cfg.guidance) if loaded.condition else None,
            "labels": conditions.labels,
            "prompts": conditions.prompts,
            "negative_prompt": cfg.get("negative_prompt"),
            "weights": loaded.weights,
            "global_step": loaded.global_step,
        }
        write_json(settings, out / "settings.json")
    log_written(int(cfg.n), written)
    return out
