"""The values train.py checks before anything is built: each key's rule, and settings that cannot go together.

Imports OmegaConf only, so that a bad value is one line before torch and Lightning are loaded.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..value_rules import (
    DATA_RULES,
    METRIC_RULES,
    SAMPLER_RULES,
    Rule,
    check_inception_score_samples,
    flag,
    number,
    or_auto,
    whole,
)
from .rules import check_values
from .typed import typed_keys_under

# Lightning's precisions that train here. The "-true" half precisions would keep the weights, the EMA and the
# optimizer state in 16 bits (the EMA's float32 average cannot follow half weights; no loss scaling either).
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "16")


def precision(value: object) -> str | None:
    """A rule: one of PRECISIONS (Hydra reads trainer.precision=32 as a number)."""
    return None if str(value) in PRECISIONS else f"is not one of {', '.join(PRECISIONS)}"


def compile_mode(value: object) -> str | None:
    """A rule: true, false or regional (compile each repeated block of the net once)."""
    return None if isinstance(value, bool) or value == "regional" else "is not true, false or regional"


def betas(value: object) -> str | None:
    """A rule: Adam's two decay rates, each in [0, 1) (torch checks them only at the first optimizer step)."""
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, list | tuple) else []
    fine = len(items) == 2 and all(
        isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in items
    )
    return None if fine else "is not two numbers in [0, 1)"


def decay_length(value: object) -> str | None:
    """A rule for a cosine's total_steps, which follows trainer.max_steps: -1 there (no step limit) gives it no end,
    and past its warm-up the learning rate would be min_ratio × lr for the rest of the run."""
    if value == -1 and not isinstance(value, bool):
        return (
            "is no step count (trainer.max_steps=-1?): a cosine decays to the step it is given; set "
            "trainer.max_steps, or lr_scheduler.total_steps, or choose lr_scheduler=warmup"
        )
    return whole(1)(value)


def length(unit: str, other: str) -> Rule:
    """A rule for a run's length: a positive whole number of `unit`, or -1 (no limit: `other` ends the run). 0
    would train nothing and leave a run folder holding only its log."""
    at_least_minus_one = whole(-1, nullable=unit == "epochs")

    def rule(value: Any) -> str | None:
        if value == 0 and not isinstance(value, bool):
            return f"trains nothing: give a positive number of {unit} (-1: until {other} ends the run)"
        return at_least_minus_one(value)

    return rule


# Values a user types that Lightning or torch would otherwise reject with a confusing message, or not at all.
RULES = {
    "seed": whole(0, maximum=2**32 - 1),  # Lightning's seed_everything takes a 32-bit seed
    "cpu_threads": whole(1, nullable=True),
    "channels_last": flag,
    "compile": compile_mode,
    "trainer.precision": precision,
    "trainer.max_steps": length("steps", "trainer.max_epochs"),
    **{f"sampler.{key}": rule for key, rule in SAMPLER_RULES.items()},  # the grids' and FID's sampler
    "trainer.max_epochs": length("epochs", "trainer.max_steps"),
    "trainer.val_check_interval": number(0.0, above=True, nullable=True),
    "trainer.log_every_n_steps": whole(1),
    "trainer.accumulate_grad_batches": whole(1),
    "trainer.gradient_clip_val": number(0.0, nullable=True),
    **{f"data.{key}": rule for key, rule in DATA_RULES.items()},
    "optim.lr": number(0.0, above=True),
    "optim.weight_decay": number(0.0),
    "optim.betas": betas,
    "callbacks.model_checkpoint.every_n_train_steps": whole(0, nullable=True),
    "callbacks.sample_grid.every_n_steps": whole(0),
    "callbacks.sample_grid.num_samples": whole(1),
    "callbacks.ema.decay": number(0.0),
    "callbacks.ema.warmup": flag,
    "callbacks.fid.every_n_steps": whole(0),
    "callbacks.fid.num_samples": whole(2),
    "callbacks.fid.batch_size": or_auto(whole(1)),
    "callbacks.fid.every_n_epochs": whole(0),
    "callbacks.fid.at_train_end": flag,  # before, a word was truthy: at_train_end=no scored at the end
    # The FID callback's metric settings (${metrics}, or its own callbacks.fid.metrics.<key>).
    **{f"metrics.{key}": rule for key, rule in METRIC_RULES.items()},
    **{f"callbacks.fid.metrics.{key}": rule for key, rule in METRIC_RULES.items()},
    "cond_drop_prob": number(0.0, maximum=1.0),
    "lr_scheduler.warmup_steps": whole(0),
    "lr_scheduler.total_steps": decay_length,
    "lr_scheduler.min_ratio": number(0.0, maximum=1.0),
    "preemption_check_every_n_steps": whole(1),
    "loss_check_every_n_steps": whole(1),
    "model.num_classes": whole(1, nullable=True),
}


def check_fid_inception_score(cfg: DictConfig) -> None:
    """The FID callback's Inception Score needs a sample per split: one line before step 1, not a failure at the
    first evaluation."""
    fid = (cfg.get("callbacks") or {}).get("fid")
    metrics = fid.get("metrics") if isinstance(fid, DictConfig) else None
    if metrics is not None and metrics.get("inception_score"):
        check_inception_score_samples(
            fid.num_samples, metrics.get("isc_splits", 10), "callbacks.fid.num_samples"
        )


def check_fused_clipping(cfg: DictConfig) -> None:
    """fp16's loss scaler and a fused optimizer cannot clip gradients together (Lightning would fail at step 1)."""
    fp16 = str(cfg.trainer.get("precision")) in ("16-mixed", "16")  # the precisions with a loss scaler
    if fp16 and not _trains_on_cuda(cfg):  # Lightning would warn and train in bf16, the run recording fp16
        raise ValueError(
            f"trainer.precision={cfg.trainer.precision} (float16 with a loss scaler) runs on CUDA GPUs only: on "
            "this CPU use trainer.precision=bf16-mixed"
        )
    if fp16 and cfg.trainer.get("gradient_clip_val") and cfg.optim.get("fused"):
        raise ValueError(
            f"trainer.precision={cfg.trainer.precision} cannot clip the gradients of a fused optimizer: "
            "use trainer.precision=bf16-mixed, optim.fused=false or trainer.gradient_clip_val=null"
        )


def _trains_on_cuda(cfg: DictConfig) -> bool:
    """Whether the Trainer's accelerator is a CUDA GPU here (auto picks one when there is one)."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


# Keys that only a conditioning reads: typed for a run without it, they were taken and ignored without a word.
CONDITION_KEYS = {
    "data.sr_factor": ("superres",),
    "data.sr_noise": ("superres",),
    "data.captions": ("text",),
    "data.max_tokens": ("text",),
    "data.text_encoder": ("text",),
    "data.text_encoder_version": ("text",),
    "data.text_cache_dir": ("text",),
    "cond_drop_prob": ("labels", "text"),
}


def check_condition_keys(cfg: DictConfig) -> None:
    """Refuse a conditioning setting typed for a run that does not condition that way (`data.sr_factor=2` on an
    unconditional run). Only what the command line set: the config's defaults hold every key."""
    condition = OmegaConf.select(cfg, "data.condition")
    if condition is None and OmegaConf.select(cfg, "model.num_classes"):
        condition = "labels"  # model.num_classes alone makes the run class-conditional (data.conditioning)
    shown = "null" if condition is None else condition
    typed = typed_keys_under(cfg, "data") | typed_keys_under(cfg, "cond_drop_prob")
    for key, conditions in CONDITION_KEYS.items():
        if key in typed and condition not in conditions:
            wanted = " or ".join(f"data.condition={c}" for c in conditions)
            raise ValueError(
                f"{key} applies to {wanted} only, and this run has data.condition={shown}: drop it, or "
                f"add data.condition={conditions[0]}"
            )


def check_model_fits_data(cfg: DictConfig) -> None:
    """A pixel diffusion model built for another size than its data's images, one line: before, model.image_size=16
    on 8×8 digits trained (another attention level, another parameter count), and its diffusers export said 16."""
    if cfg.get("task") == "autoencoder" or cfg.get("autoencoder"):  # latents: use_latents sizes the model
        return
    model, data = OmegaConf.select(cfg, "model.image_size"), OmegaConf.select(cfg, "data.image_size")
    if model is None or data is None or model == data:
        return
    raise ValueError(
        f"model.image_size={model} but data.image_size={data}: the network would be built for another size than "
        f"the images it trains on; drop model.image_size (it follows data.image_size) or give "
        f"data.image_size={model} (the images are resized to it)"
    )


def check_model_builds(cfg: DictConfig) -> None:
    """Build the network on the meta device (no memory, no weights), so that a shape it cannot take (a DiT's
    patch size or heads, a U-Net's attention resolution) is one line before Hydra writes the run folder."""
    import torch
    from hydra.utils import instantiate

    with torch.device("meta"):
        instantiate(cfg.model)


# trainer=fsdp: Lightning's FSDP2 strategy trains in these precisions only (no fp16 loss scaler for sharded
# gradients); checkpoints are one full file or a folder of per-rank shards (training/sharded_checkpoint.py).
SHARDED_PRECISIONS = ("32-true", "32", "bf16-mixed")
SHARDED_STATE_DICT_TYPES = ("full", "sharded")


def check_sharded_training(cfg: DictConfig) -> None:
    """trainer=fsdp with a precision, recomputation switch or checkpoint kind it cannot train with: one line before
    anything is built."""
    strategy = cfg.trainer.get("strategy")
    if not isinstance(strategy, DictConfig) or not str(strategy.get("_target_", "")).endswith(
        "ShardedStrategy"
    ):
        return
    if cfg.get("task") == "autoencoder":
        # Its module has no configure_model to shard, so Lightning's FSDP2 raised a TypeError in each process, after
        # the run folder was made and claimed.
        raise ValueError(
            "trainer=fsdp shards the diffusion networks, not an autoencoder (task=autoencoder): train it with "
            "trainer=ddp, or on one device"
        )
    if (cfg.get("callbacks") or {}).get("phema") is not None:
        # Its profiles would average rank 0's shard of each weight only: snapshots with half a network.
        raise ValueError(
            "callbacks.phema cannot follow trainer=fsdp's sharded weights (its snapshots would hold rank 0's shard "
            "of each): train post-hoc EMA runs with trainer=ddp, or drop callbacks.phema"
        )
    precision = str(cfg.trainer.get("precision"))
    if precision not in SHARDED_PRECISIONS:
        raise ValueError(
            f"trainer=fsdp cannot train with trainer.precision={precision}: use one of "
            f"{', '.join(SHARDED_PRECISIONS)} (Lightning's FSDP2 strategy has no fp16 loss scaler)"
        )
    recompute = strategy.get("activation_checkpointing", False)
    if not isinstance(recompute, bool):  # the strategy takes any truthy value as on: `no` would recompute
        raise ValueError(f"trainer.strategy.activation_checkpointing={recompute!r} is not true or false")
    kind = str(strategy.get("state_dict_type", "full"))
    if kind not in SHARDED_STATE_DICT_TYPES:
        raise ValueError(
            f"trainer.strategy.state_dict_type={kind} is not one of {', '.join(SHARDED_STATE_DICT_TYPES)} "
            "(full: one file gathered on rank 0; sharded: one file per rank)"
        )


def check_generation_settings(cfg: DictConfig) -> None:
    """Build what the run will generate and score with, so that a bad value is one line before step 1, not at
    the first sample grid thousands of steps in: the sampler of every callback (and the top-level one) on the
    configured schedule, their guidance and precision, and the metric settings of the FID callback."""
    from hydra.utils import instantiate  # torch and the feature networks: only once a run is checked

    from ..diffusion.precision import check_precision
    from ..generation.sampler import bound_sampler
    from ..metrics.evaluator import Evaluator
    from .errors import one_line

    schedule = instantiate(cfg.schedule)
    entries = {
        name: entry for name, entry in (cfg.get("callbacks") or {}).items() if isinstance(entry, DictConfig)
    }
    samplers = {"sampler": cfg.get("sampler")}
    samplers.update(
        {f"callbacks.{name}.sampler": e.sampler for name, e in entries.items() if e.get("sampler")}
    )
    for key, node in samplers.items():
        if node is None:
            continue
        try:
            latent = bool(cfg.get("autoencoder"))
            bound_sampler(instantiate(node), schedule, cfg.prediction_type, latent)
        except TypeError as error:
            raise ValueError(f"{key}: a value has the wrong type ({one_line(error)})") from error
        except ValueError as error:
            raise ValueError(f"{key}: {one_line(error)}") from error
    condition = OmegaConf.select(cfg, "data.condition")
    for name, entry in entries.items():
        try:
            check_values(entry, {"guidance": number(0.0)})
            if entry.get("precision") is not None:
                check_precision(entry.precision)
        except ValueError as error:
            raise ValueError(f"callbacks.{name}.{error}") from error
        if entry.get("metrics") is not None:
            Evaluator(**OmegaConf.to_container(entry.metrics, resolve=True))
        guided = entry.get("guidance") is not None and float(entry.guidance) != 1.0
        if guided and not entry.get("guide") and condition in (None, "superres"):
            # Before, taken and ignored: the grid and FID sampled the plain model (sample.py refuses it).
            what = (
                "an unconditional model"
                if condition is None
                else "a super-resolution model (its low-res image is never dropped)"
            )
            raise ValueError(
                f"callbacks.{name}.guidance={entry.guidance} has no effect on {what}: drop it, or guide with a "
                f"weaker checkpoint (callbacks.{name}.guide=…)"
            )
        if entry.get("guide"):
            if float(entry.get("guidance", 1.0)) == 1.0:
                raise ValueError(
                    f"callbacks.{name}.guide={entry.guide} has no effect at callbacks.{name}.guidance=1 (the "
                    "model's prediction alone): give a guidance above 1, or drop the guide"
                )
            check_callback_guide(cfg, schedule, f"callbacks.{name}.guide", entry.guide)


def check_callback_guide(cfg: DictConfig, schedule: Any, key: str, guide: str) -> None:
    """A callback's autoguidance checkpoint, read and held against the model this run trains (its image shape,
    schedule, prediction type and conditioning), before step 1."""
    import torch

    from ..checkpoint import LoadedModel, load_model
    from ..diffusion.formulations.timestep_face import sampling_view
    from ..generation.autoguide import check_guide
    from .formulation_checks import build_formulation

    config = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in ("data", "model")}
    formulation = build_formulation(cfg)
    # What the trained model samples with: an EDM or flow model's table of noise levels, as its checkpoint will.
    _, schedule, prediction_type = sampling_view(
        torch.nn.Identity(), schedule, cfg.prediction_type, formulation
    )
    trained = LoadedModel(None, schedule, prediction_type, config, "raw", 0, formulation)
    try:
        check_guide(trained, load_model(guide), "the model this run trains", guide)
    except (OSError, ValueError) as error:
        raise ValueError(f"{key}: {error}") from error
