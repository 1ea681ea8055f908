"""The one preparation of a training run, shared by preflight (the Hydra callback, before Hydra writes a file)
and train(): the values checked, the conditioning resolved, what the run generates and scores with built once,
the checkpoint a resume starts from read and checked, and TrainSettings made from it all. train() takes what
preflight prepared in the same process instead of doing it all again (a second read of the checkpoint, a second
build of every sampler)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..cluster.devices import check_matches_started_processes
from .autoencoder_checks import check_autoencoder_run
from .latent import check_resumed_autoencoder_found, use_latents
from .phema_checks import check_phema_run
from .rules import check_given, check_values
from .train_checks import (
    RULES,
    check_condition_keys,
    check_fid_inception_score,
    check_fused_clipping,
    check_model_fits_data,
    check_sharded_training,
)
from .typed import group_choices


@dataclass(frozen=True)
class TrainSettings:
    """train.py's config as train() reads it, made once: the run folder, the seed and threads, whether it logs to W&B,
    what it starts from (the checkpoint a resume continues, None for a fresh run, with its stored config and
    step; or init_from's diffusers folder or difflab model). The groups Hydra instantiates (data, module, trainer, callbacks,
    logger) stay in cfg."""

    run_dir: Path
    seed: int
    cpu_threads: int | None
    init_from: str | None
    logs_to_wandb: bool
    resume: Path | None = None
    stored_config: dict[str, Any] | None = None
    step: int = 0
    # init_from's difflab weights, checked against the net: read once, here, and loaded by train().
    init_weights: dict[str, Any] | None = None


_handed_over: list[TrainSettings] = []  # preflight's preparation, until train() of the same process takes it


def prepare(cfg: DictConfig, run_dir: Path) -> TrainSettings:
    """Check and complete `cfg` (in place: the conditioning is resolved into it) and read a resume's checkpoint;
    a problem is a one-line error before anything is written."""
    check_given(cfg)
    check_values(cfg, RULES)  # the values typed: before torch and Lightning load
    check_fid_inception_score(cfg)
    check_sharded_training(cfg)
    # Before the run folder is claimed: torchrun's other ranks wait for rank 0 to name it, and go when it stops.
    check_matches_started_processes(cfg.trainer)
    check_fused_clipping(cfg)
    check_autoencoder_run(cfg)
    check_phema_run(cfg)
    check_condition_keys(cfg)
    check_model_fits_data(cfg)
    check_resumed_autoencoder_found(cfg, run_dir)
    use_latents(cfg)
    record_data_root_as_found(cfg)
    return _build_and_read(cfg, run_dir)


def record_data_root_as_found(cfg: DictConfig) -> None:
    """data.root recorded as the folder it names, not as typed: the checkpoint's config is read again by
    evaluate.py (its reference images), sample.py and resumes, which may start from another folder (before,
    "data root pics does not exist")."""
    root = OmegaConf.select(cfg, "data.root")
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute() and Path(root).exists():
        cfg.data.root = str(Path(root).resolve())


def _build_and_read(cfg: DictConfig, run_dir: Path) -> TrainSettings:
    """What needs torch: the conditioning, samplers and metrics built once, a resume's checkpoint read."""
    from hydra.utils import instantiate

    from ..checkpoint_file import CONFIG_KEY
    from ..data.conditioning import ClassCountMismatch
    from ..model_folder.diffusers_folder import check_unet_config, check_unet_folder, unet_folder
    from ..model_folder.diffusers_mapping import unet_arguments
    from ..model_folder.hub import fetch_hub_pipeline, is_hub_id
    from ..runs.init_weights import (
        is_difflab_source,
        read_init_weights,
        warn_if_pipeline_trained_otherwise,
    )
    from ..runs.resume import (
        CONDITIONING_RECIPE,
        DATA_SOURCE,
        check_classes_kept,
        check_condition_kept,
        check_discriminator_kept,
        check_ema_kept,
        check_resumable,
        check_sharded_resumed_by_fsdp,
        check_steps_left,
        check_task_kept,
        read_resumable,
        resume_path,
        warn_if_at_the_step_limit,
        warn_if_conditioning_changed,
        warn_if_data_changed,
        warn_if_lr_schedule_changed,
        warn_if_seed_changed,
    )
    from .argument_types import check_argument_types
    from .common import fill_conditioning
    from .formulation_checks import (
        build_formulation,
        check_prediction_type_applies,
        check_schedule_applies,
        warn_if_zero_snr_predicts_epsilon,
    )
    from .latent import check_resumed_autoencoder
    from .train_checks import check_generation_settings, check_model_builds
    from .typed import typed_overrides

    resume = resume_path(cfg.ckpt_path, run_dir)
    data = f"data.root={cfg.data.root}" if cfg.data.get("root") else f"data={cfg.data.get('dataset')}"
    try:
        taken_from_data = fill_conditioning(cfg)
    except ClassCountMismatch as mismatch:
        if resume is not None:
            # A resume inherits the typed model.num_classes: where the data gained or lost a class since, that is
            # what to say (before, "use model.num_classes=K", which the checkpoint then refused).
            stored = read_resumable(resume, targets_in(cfg))[CONFIG_KEY]
            check_classes_kept(mismatch.found, None, data, stored, resume)
        raise
    folders = OmegaConf.select(
        cfg, "data.class_folders"
    )  # recorded by fill_conditioning for a labelled folder
    folders = None if folders is None else list(folders)
    check_argument_types(cfg)
    check_generation_settings(cfg)
    build_formulation(cfg)
    check_model_builds(cfg)
    settings = TrainSettings(
        run_dir=run_dir,
        seed=int(cfg.seed),
        cpu_threads=cfg.cpu_threads,
        init_from=cfg.init_from,
        logs_to_wandb="wandb" in (cfg.get("logger") or {}),  # logger=none leaves no logger key
    )
    if resume is not None:
        strategy = OmegaConf.to_container(cfg.trainer, resolve=False).get("strategy")
        check_sharded_resumed_by_fsdp(resume, strategy)
        ckpt = read_resumable(resume, targets_in(cfg))
        check_classes_kept(taken_from_data.get("num_classes"), folders, data, ckpt[CONFIG_KEY], resume)
        check_task_kept(cfg.get("task"), ckpt[CONFIG_KEY], resume)
        check_discriminator_kept(cfg.get("autoencoder_module") or {}, ckpt[CONFIG_KEY], resume)
        check_condition_kept(typed_overrides(cfg), ckpt[CONFIG_KEY], resume)
        check_resumable(fixed_values(cfg), lambda: instantiate(cfg.model), ckpt, resume, group_choices(cfg))
        check_ema_kept(OmegaConf.select(cfg, "callbacks.ema") is not None, ckpt, resume)
        check_resumed_autoencoder(cfg, ckpt, resume)
        check_steps_left(int(ckpt["global_step"]), int(cfg.trainer.max_steps), resume)
        warn_if_at_the_step_limit(int(ckpt["global_step"]), int(cfg.trainer.max_steps))
        now = cfg.get("lr_scheduler")
        now = None if now is None else OmegaConf.to_container(now, resolve=True)
        choice = group_choices(cfg).get("lr_scheduler")
        warn_if_lr_schedule_changed(now, ckpt[CONFIG_KEY], int(ckpt["global_step"]), choice)
        data_now = {key: OmegaConf.select(cfg, key) for key in DATA_SOURCE}
        warn_if_data_changed(data_now, ckpt[CONFIG_KEY], int(ckpt["global_step"]))
        warn_if_seed_changed(settings.seed, ckpt[CONFIG_KEY], int(ckpt["global_step"]))
        recipe_now = {
            key: OmegaConf.select(cfg, key) for keys in CONDITIONING_RECIPE.values() for key in keys
        }
        warn_if_conditioning_changed(recipe_now, ckpt[CONFIG_KEY], int(ckpt["global_step"]))
        return replace(settings, resume=resume, stored_config=ckpt[CONFIG_KEY], step=int(ckpt["global_step"]))
    # A fresh run's only: a resume keeps what its checkpoint was trained with.
    check_prediction_type_applies(cfg)
    check_schedule_applies(cfg)
    warn_if_zero_snr_predicts_epsilon(cfg)
    if settings.init_from and is_difflab_source(str(settings.init_from)):
        network_now = {
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "condition": OmegaConf.select(cfg, "data.condition"),
            "autoencoder": cfg.get("autoencoder"),
            "task": cfg.get("task"),
        }
        weights = read_init_weights(
            str(settings.init_from),
            lambda: instantiate(cfg.model),
            trained_for(cfg),
            targets_in(cfg),
            network_now,
            folders,
        )
        return replace(settings, init_weights=weights)
    if settings.init_from:
        folder = settings.init_from
        if not is_hub_id(folder):
            unet_folder(
                folder
            )  # a missing path said as one, whatever the net (a DiT's was "only … UNet maps")
        args = unet_arguments(OmegaConf.to_container(cfg.model, resolve=True))
        # A Hub id (google/ddpm-cifar10-32): its config is checked before its weights are fetched.
        if is_hub_id(folder):
            named = f"init_from={folder}"
            folder = str(fetch_hub_pipeline(folder, lambda fetched: check_unet_config(args, fetched, named)))
        check_unet_folder(args, folder)
        warn_if_pipeline_trained_otherwise(str(folder), trained_for(cfg))
        return replace(settings, init_from=folder)
    return settings


def hand_over(settings: TrainSettings) -> None:
    """Keep preflight's preparation for the train() that Hydra runs next in this process."""
    _handed_over[:] = [settings]


def prepared_for(cfg: DictConfig, run_dir: Path) -> TrainSettings:
    """What preflight prepared for `run_dir`, taken once; otherwise (train() called directly, a sweep's job, a DDP
    rank other than 0) the preparation, done here."""
    taken = _handed_over.pop() if _handed_over else None
    if taken is not None and taken.run_dir.resolve() == run_dir.resolve():
        return replace(taken, run_dir=run_dir)  # the folder as the run's config writes it
    return prepare(cfg, run_dir)


def trained_for(cfg: DictConfig) -> dict[str, Any]:
    """What the configured run trains its network to predict (runs.init_weights.TRAINED_FOR), as configured."""
    from ..runs.init_weights import TRAINED_FOR

    return {key: value for key, value in fixed_values(cfg).items() if key in TRAINED_FOR}


def fixed_values(cfg: DictConfig) -> dict[str, Any]:
    """The values a checkpoint fixes (FIXED_BY_CHECKPOINT), as configured now."""
    from ..runs.resume import FIXED_BY_CHECKPOINT

    wanted = {}
    for key in FIXED_BY_CHECKPOINT:
        node = OmegaConf.select(cfg, key)
        if node is not None:
            wanted[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if isinstance(
        cfg.get("formulation"), DictConfig
    ):  # its copies of schedule and prediction_type are named there
        from .formulation_checks import own_values

        wanted["formulation"] = own_values(cfg.formulation)
    return wanted


def targets_in(cfg: DictConfig) -> set[str]:
    """Every `_target_` of the groups a checkpoint's config may build, as the given config names them."""
    found: set[str] = set()
    from ..checkpoint_config import BUILT_GROUPS, targets

    for group in BUILT_GROUPS:
        node = cfg.get(group)
        if OmegaConf.is_config(node):
            found.update(target for _, target in targets(OmegaConf.to_container(node, resolve=False)))
    return found
