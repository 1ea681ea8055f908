"""train(cfg): build data, model, trainer from the composed config and fit (or resume)."""

from __future__ import annotations

import functools
import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from ..cluster.devices import check_trainer, set_cpu_threads
from ..cluster.jobs import is_secondary_rank, slurm_job_id
from ..cluster.processes import end_process_groups
from ..cluster.stop_signal import StoppedBySignal
from ..cluster.torchrun import own_process_group_store
from ..compat import end_launched_processes, finish_when_resumed_at_the_limit
from ..data import ImageDataModule
from ..data.errors import worker_death
from ..generation.memory import is_out_of_memory
from ..io.atomic import is_out_of_space, write_refused_under
from ..model_folder.diffusers_folder import load_unet_folder
from ..model_folder.diffusers_mapping import unet_arguments
from ..overrides import pasteable
from ..runs.folder import has_logged, let_go, resumed_name
from ..runs.resume import LAST, tidy_before_fit
from ..runs.stopped_early import (
    launch_forgotten_if_refused,
    noted_if_stopped,
    released_if_another_process_ends_it,
    released_if_refused,
)
from ..tracking.run_names import clean_config
from ..tracking.wandb_logger import default_wandb_offline, finish_wandb_run, wandb_start_refusals_named
from ..training import AutoencoderModule, DiffusionModule, NonFiniteError, Preempted, with_atomic_checkpoints
from ..training.atomic_checkpoint_io import newest_checkpoint, out_of_space, write_refused
from ..training.console import (
    keep_console_in_run_log,
    log_run_outputs,
    print_run_summary,
    quiet_library_noise,
)
from ..training.metrics_file import MetricsFile
from ..training.other_processes import LOST_PEER_GRACE_S, failed_elsewhere, lost_a_peer
from ..training.out_of_memory import out_of_memory
from ..training.preemption import requeue_signals
from ..training.requeue import requeue
from .cluster import devices_asked, refuse_relaunched_processes_in_this_job, slurm_launcher
from .common import instantiate_entries, optimized_metric, resolved_config
from .errors import USER_ERRORS, exit_if_stopped
from .prepare import TrainSettings, prepared_for
from .sweep_job import hold_sweep_jobs_folder
from .wandb_glue import attach_run_id, name_wandb_run

log = logging.getLogger("difflab")


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule, as cfg.module composes it from the model, schedule, optim and lr_scheduler groups; an
    autoencoder run (task=autoencoder, set by model=autoencoder_kl_*) builds cfg.autoencoder_module instead."""
    return instantiate(cfg.autoencoder_module if cfg.get("task") == "autoencoder" else cfg.module)


def build_callbacks(cfg: DictConfig, config: dict[str, Any]) -> list[L.Callback]:
    """Every entry of cfg.callbacks in its order; a partial (StoreRunConfig) is completed with the run's resolved
    config. A progress bar is left out where trainer.enable_progress_bar=false (Lightning refuses the pair)."""
    callbacks = []
    for callback in instantiate_entries(cfg.get("callbacks")):
        if isinstance(callback, functools.partial):
            callback = callback(config=config)
        if isinstance(callback, ProgressBar) and not cfg.trainer.enable_progress_bar:
            continue
        callbacks.append(callback)
    return callbacks


def initialise_from(cfg: DictConfig, module: DiffusionModule, settings: TrainSettings) -> None:
    """init_from=<diffusers UNet2DModel folder, or a difflab checkpoint, run folder or safetensors export>: start
    from its weights (a resume keeps its own instead): a difflab model's as preparation read them, a diffusers
    folder from where preparation found it (a Hub id's local copy)."""
    if settings.resume is not None:
        log.info(
            "resuming from %s: its weights are used, init_from=%s is not", settings.resume, cfg.init_from
        )
        return
    if settings.init_weights is not None:
        with torch.no_grad():
            module.net.load_state_dict(settings.init_weights)
        # Handed over once: emptied so that no second copy of the network is held while the run trains.
        settings.init_weights.clear()
        log.info("initialised the network from the weights of %s", settings.init_from)
        return
    load_unet_folder(
        module.net, unet_arguments(OmegaConf.to_container(cfg.model, resolve=True)), settings.init_from
    )


def log_interval(max_steps: int | None, log_every_n_steps: int) -> int:
    """log_every_n_steps, lowered where the run is too short to log ten times (a 20-step run at the default 50
    would log no metric at all), so that every run has its loss curve."""
    if max_steps is None or max_steps <= 0:
        return log_every_n_steps
    interval = min(log_every_n_steps, max(1, max_steps // 10))
    if interval < log_every_n_steps and not is_secondary_rank():
        text = "logging metrics every %d steps: log_every_n_steps=%d is long for a %d-step run"
        log.info(text, interval, log_every_n_steps, max_steps)
    return interval


def validation_interval(max_steps: int | None, val_check_interval: Any, accumulate: int = 1) -> Any:
    """val_check_interval in optimizer steps as Lightning's batches (`accumulate` of them a step: before, with
    accumulate_grad_batches=2 and an interval of 5, validation ran at steps 2, 5, 7, 10, …, some mid-step), lowered
    to max_steps where the run is shorter: before, a run shorter than the interval (an Optuna trial of 30 steps at
    the default 1000) never validated, so its optimized_metric=val/loss was never logged. A fraction of an epoch
    is left as it is."""
    if not isinstance(val_check_interval, int) or isinstance(val_check_interval, bool):
        return val_check_interval
    if max_steps is not None and 0 < max_steps < val_check_interval:
        if not is_secondary_rank():
            log.info(
                "validating at step %d: trainer.val_check_interval=%d is longer than the %d-step run",
                max_steps,
                val_check_interval,
                max_steps,
            )
        val_check_interval = max_steps
    return val_check_interval * accumulate


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    """The Trainer; inside a SLURM job Lightning's own auto-requeue is switched off (CheckpointOnSignal and
    submitit handle the signals: Lightning's handler would save mid-step and requeue a second time)."""
    extra: dict[str, Any] = {}
    if SLURMEnvironment.detect() and cfg.trainer.get("plugins") is None:
        extra["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    extra["plugins"] = with_atomic_checkpoints(extra.get("plugins", instantiate(cfg.trainer.get("plugins"))))
    trainer_cfg = dict(cfg.trainer)
    trainer_cfg["log_every_n_steps"] = log_interval(
        cfg.trainer.get("max_steps"), cfg.trainer.log_every_n_steps
    )
    if cfg.trainer.get("check_val_every_n_epoch") is None:  # the interval counts optimizer steps
        trainer_cfg["val_check_interval"] = validation_interval(
            cfg.trainer.get("max_steps"),
            cfg.trainer.get("val_check_interval"),
            int(cfg.trainer.get("accumulate_grad_batches") or 1),
        )
    if (
        not any(isinstance(c, ModelCheckpoint) for c in callbacks)
        and "enable_checkpointing" not in cfg.trainer
    ):
        # Else Lightning adds its own (checkpoints/epoch=0-step=6.ckpt), which callbacks=none asks not to write.
        trainer_cfg["enable_checkpointing"] = False
    disc_weight = float((cfg.get("autoencoder_module") or {}).get("disc_weight") or 0)
    if cfg.get("task") == "autoencoder" and disc_weight > 0:
        processes = devices_asked(trainer_cfg.get("devices", 1), trainer_cfg.get("accelerator", "auto"))
        processes *= int(trainer_cfg.get("num_nodes") or 1)
        strategy = AutoencoderModule.strategy_for(trainer_cfg.get("strategy"), disc_weight, processes)
        if strategy is not None:
            trainer_cfg["strategy"] = strategy
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False, **extra)
    finish_when_resumed_at_the_limit(trainer)
    return trainer


def keep_earlier_csv_logs(cfg: DictConfig, step: int) -> None:
    """Point CSV loggers at a new version folder when resuming: Lightning's CSVLogger deletes the metrics.csv it
    finds in its folder, which holds the first part of this run."""
    loggers = cfg.get("logger") or {}
    for entry in loggers.values():
        if not isinstance(entry, DictConfig) or not str(entry.get("_target_", "")).endswith("CSVLogger"):
            continue
        base = Path(str(entry.save_dir)) / str(entry.get("name") or "")
        with open_dict(entry):
            entry.version = resumed_name(base, step)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit a diffusion model; returns the last logged metrics. Run files go to cfg.paths.output_dir.

    ckpt_path=last (this run folder's checkpoints/last.ckpt) or ckpt_path=<file> resumes exactly: weights, EMA,
    optimizer and LR schedule, step and epoch, position in the data, and the random draws that follow. A
    requeued SLURM job, or a job torchrun restarted, resumes from its last.ckpt by itself; the W&B run id goes
    with the run folder.
    """
    quiet_library_noise()
    keep_console_in_run_log()
    # What preflight prepared, or the same preparation done now.
    settings = prepared_for(cfg, Path(cfg.paths.output_dir))
    refuse_relaunched_processes_in_this_job(cfg)
    hold_sweep_jobs_folder(settings.run_dir)
    # A resume, or a requeued job starting over in the folder its first attempt logged in.
    if settings.resume is not None or has_logged(settings.run_dir):
        keep_earlier_csv_logs(cfg, settings.step)
    set_cpu_threads(settings.cpu_threads)
    own_process_group_store()  # a torchrun restart: not the process-group keys its first attempt left
    L.seed_everything(settings.seed, workers=True)
    torch.set_float32_matmul_precision("high")  # TF32 on Ampere+ GPUs; no effect on the CPU
    # The process groups end once fit's Trainer, module and data are gone, not in the interpreter's exit, where
    # ending them can abort a finished run. A stop to requeue is no error: its traceback (which holds them) goes.
    try:
        metrics = fit(cfg, settings)
    except Preempted as stop:
        stop.__traceback__ = None
        end_process_groups()
        raise
    finally:
        let_go(settings.run_dir)  # the folder preflight locked (runs.folder.hold_run_folder)
    end_process_groups()
    return metrics


def fit(cfg: DictConfig, settings: TrainSettings) -> dict[str, float]:
    """Build the data, module, callbacks, loggers and Trainer from `cfg` and fit; returns the last logged metrics."""
    output_dir, resume, step = settings.run_dir, settings.resume, settings.step
    trainer: L.Trainer | None = None

    def took_a_step() -> bool:  # asked when a stop ends the run
        return trainer is not None and trainer.global_step > step

    # A refusal before the first checkpoint of a fresh run (a split too small, an image size the model cannot
    # take, GPUs or nodes this machine does not have) gives its run folder back: a refused run leaves nothing
    # behind. The devices are checked here, not in preflight: trainer=slurm reads them from Hydra's launcher
    # config, which is set only once the job runs.
    fresh = resume is None and not is_secondary_rank()
    launch = this_launch_files(output_dir) if resume is not None and not is_secondary_rank() else None
    with (
        noted_if_stopped(output_dir, resume, took_a_step),
        released_if_refused(output_dir, fresh, refusals=USER_ERRORS),
        released_if_another_process_ends_it(output_dir, fresh),
        launch_forgotten_if_refused(launch, took_a_step, refusals=USER_ERRORS),
    ):
        check_trainer(cfg.trainer, slurm_launcher())
        if settings.logs_to_wandb:
            default_wandb_offline()
            attach_run_id(cfg, output_dir, settings.stored_config, record=not is_secondary_rank())
        datamodule = instantiate(cfg.data)
        module = build_module(cfg)
        if settings.init_from:
            initialise_from(cfg, module, settings)
        config = resolved_config(cfg)
        callbacks = build_callbacks(cfg, config)
        if isinstance(datamodule, ImageDataModule) and not datamodule.download:
            # Its refusals (a split too small, no classes, a caption missing) before a logger starts a W&B run:
            # Lightning starts it before its own set-up, which would leave an empty run in the cloud. After the
            # module: encoding latents (not on a cache hit) draws random numbers, which must not move its init.
            datamodule.setup("fit")
        loggers = instantiate_entries(cfg.get("logger"))
        # Last, so a configured logger stays the Trainer's first (its folder is Lightning's log_dir).
        at_the_limit = resume is not None and step == cfg.trainer.get("max_steps")
        # Not resumed, the run starts at step 0: lines already there are a requeued job's first attempt, which
        # was killed before its first checkpoint, and are set aside like an abandoned continuation's.
        metrics_file = MetricsFile(
            output_dir, resumed_at=step if resume is not None else 0, final_again=at_the_limit
        )
        trainer = build_trainer(cfg, callbacks, [*loggers, metrics_file])
        parameters = sum(p.numel() for p in module.net.parameters())
        for logger in loggers:
            with wandb_start_refusals_named():  # the first use of a W&B logger starts its run
                logger.log_hyperparams({**clean_config(config), "parameters": parameters})
        if trainer.is_global_zero:
            print_run_summary(config, parameters, output_dir)

        tidy_before_fit(output_dir, resume, step, trainer.is_global_zero)
        try:
            # weights_only: the checkpoint was read and checked above by the same weights-only unpickler.
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        except Preempted as stop:
            requeue(stop, trainer.is_global_zero, trainer.loggers)
        except BaseException as error:
            if isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt):
                # Lightning's end of a Ctrl-C (its shutdown, exit 1, the other ranks killed): the run's own line.
                raise error.__context__ from None
            if isinstance(error, StoppedBySignal) and error.signum in requeue_signals() and slurm_job_id():
                # A time limit's warning in set-up or in the final grid or FID (its step saved where it can be):
                # the job comes back with a whole time limit and does it again.
                stop = Preempted(error.signum, trainer.global_step, output_dir / LAST, None)
                requeue(stop, trainer.is_global_zero, trainer.loggers)
            # The ranks Lightning started would wait for this one in a collective; one that failed first is named.
            grace_s = LOST_PEER_GRACE_S if lost_a_peer(error) else 1.0
            ended = end_launched_processes(trainer, grace_s) if trainer.is_global_zero else {}
            if is_out_of_space(error):
                raise out_of_space(error, output_dir) from error
            if (refused := write_refused_under(error, output_dir)) is not None:
                raise write_refused(refused, output_dir) from error
            if isinstance(error, NonFiniteError) and (
                last_good := newest_checkpoint(output_dir / "checkpoints")
            ):
                # A resume refuses another optim.lr (the optimizer's state holds the old one): before, the line
                # advised a lower one and left the user to find that out.
                error.add_note(
                    f"to go on from {last_good} with a lower optim.lr, start a new run with "
                    f"{pasteable('init_from', last_good)} (a resume keeps the run's optim.lr)"
                )
            if is_out_of_memory(error):
                raise out_of_memory(error, trainer.strategy.root_device, cfg.data.batch_size) from error
            if (died := worker_death(error)) is not None:
                raise died from error
            elsewhere = failed_elsewhere(error, ended)
            if elsewhere is not None and isinstance(error, Exception) and not isinstance(error, USER_ERRORS):
                raise elsewhere from error
            raise

    if trainer.is_global_zero:
        # The config's checkpoint callback, not a checkpoints/ folder: one a resume found is no sign this run kept one.
        keeper = trainer.checkpoint_callback
        checkpoints = Path(keeper.dirpath) if keeper is not None and keeper.dirpath else None
        log_run_outputs(output_dir, trainer.callback_metrics, checkpoints)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def this_launch_files(run_dir: Path) -> Path | None:
    """The folder Hydra wrote this resume's config to (.hydra/resumed_step_<step>/, chosen by preflight); None
    outside Hydra or where it wrote the run's first .hydra/."""
    from hydra.core.hydra_config import HydraConfig

    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    return run_dir / subdir if subdir and Path(subdir).name.startswith("resumed_step_") else None


def train_command(cfg: DictConfig) -> float | None:
    """What `python train.py` runs: the W&B run named, train, the W&B run closed (failed or not, so the next job
    of a sweep opens its own); returns cfg.optimized_metric's final value for a sweeper (None when unset)."""
    name_wandb_run(cfg)
    # SIGTERM outside the training loop (in set-up, in the final grid or FID) stops at once, with one line; so does
    # the requeue signal, which requeues a SLURM job once set-up is under way.
    stops = (signal.SIGTERM, signal.SIGHUP, *requeue_signals())
    with exit_if_stopped("train.py", unless_handled=True, signals=stops):
        try:
            metrics = train(cfg)
        except BaseException:
            finish_wandb_run(failed=True)
            raise
    finish_wandb_run()
    return optimized_metric(cfg, metrics)
