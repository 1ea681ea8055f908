"""sample(cfg): generate images from a checkpoint with any sampler and write PNGs, a grid and an .npz."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..checkpoint import LoadedModel, check_contradictions, load_model
from ..data.conditions import GenerationConditions, balanced
from ..diffusion.conditioning import label_condition, spread_labels
from ..diffusion.generate import generate
from ..io.images import save_samples
from .common import (
    build_sampler,
    check_finite,
    check_values,
    number,
    output_folder,
    pick_device,
    require,
    set_cpu_threads,
    whole,
    write_json,
)
from .edit import EDIT_MODES, check_edit_request, edit

log = logging.getLogger("difflab")

MODES = ("sample", *EDIT_MODES)

# Values sample.py and its edit modes take, checked before anything is loaded or written.
RULES = {
    "n": whole(1),
    "batch_size": whole(1),
    "seed": whole(0),
    "cpu_threads": whole(1, nullable=True),
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
    labels = cfg.get("labels")
    if loaded.condition is None:
        if labels is not None:
            raise ValueError(f"labels={labels} given, but {cfg.ckpt} holds an unconditional model")
        if float(cfg.get("guidance", 1.0)) != 1.0:
            raise ValueError(
                f"guidance={cfg.guidance} needs a conditional model; {cfg.ckpt} is unconditional"
            )
        return GenerationConditions(None)
    if loaded.condition == "labels":
        if labels is None:
            return balanced("labels", loaded.num_classes, n)
        wanted = [labels] if isinstance(labels, int) else list(labels)
        bad = [label for label in wanted if not (isinstance(label, int) and 0 <= label < loaded.num_classes)]
        if bad or not wanted:
            raise ValueError(
                f"labels={labels}: the model knows classes 0..{loaded.num_classes - 1} (give one or a list)"
            )
        spread = spread_labels(wanted, n)
        return GenerationConditions(label_condition(spread), math.ceil(n / len(wanted)), spread)
    raise ValueError(f"{cfg.ckpt}: sample.py cannot condition on {loaded.condition!r} yet")


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

    cfg.mode = inpaint or img2img edits the pictures in cfg.image instead (see run/edit.py).
    """
    mode = cfg.get("mode", "sample")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "sample":
        check_edit_request(cfg)
    loaded = load_checked_model(cfg)
    conditions = requested_conditions(cfg, loaded, int(cfg.n))
    if mode != "sample":
        return edit(cfg, loaded, conditions)
    sampler = build_sampler(cfg, loaded)
    with output_folder(cfg.out, "sample") as out:
        log.info(
            "sampling %d images with %r (%s weights, step %d)",
            cfg.n,
            sampler,
            loaded.weights,
            loaded.global_step,
        )
        images = generate(
            sampler,
            loaded.net,
            range(int(cfg.n)),
            loaded.sample_shape,
            cfg.seed,
            cfg.batch_size,
            conditions.cond_for,
            float(cfg.guidance),
        )
        check_finite(images, cfg.ckpt)
        written = save_samples(images, out, conditions.nrow)
        settings = {
            "ckpt": str(cfg.ckpt),
            "n": int(cfg.n),
            "seed": int(cfg.seed),
            "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
            "nfe": sampler.nfe,
            "guidance": float(cfg.guidance) if loaded.condition else None,
            "labels": conditions.labels,
            "weights": loaded.weights,
            "global_step": loaded.global_step,
        }
        write_json(settings, out / "settings.json")
    log.info(
        "wrote %d PNGs to %s, the grid %s and %s", cfg.n, written["images"], written["grid"], written["npz"]
    )
    return out
