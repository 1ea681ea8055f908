"""Everything train.py checks before Hydra writes a single file: the values typed, the checkpoint a resume
starts from, and the run folder. A run folder belongs to one run (runs/folder.py): a fresh one is claimed in one
atomic step (two runs started in the same second never share one), a folder holding another run is refused, and a
resume (or a requeued SLURM job) goes back into its own folder only once its checkpoint is known to fit the config;
here Hydra's config is told where it writes. A job SLURM requeues finds that folder by the record its first attempt
kept (runs.job_record)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ..cluster.jobs import is_requeued_job, is_secondary_rank, one_run_job, slurm_requeued
from ..cluster.torchrun import share_run_folder
from ..console_log import kept_for_the_log
from ..overrides import pasteable
from ..runs.folder import (
    check_room_to_start,
    claim_run_folder,
    has_last_checkpoint,
    hold_run_folder,
    reenters_run_folder,
    resumed_name,
)
from ..runs.job_record import earlier_run, job_record, remember_run
from ..runs.sweep_folder import SUBMITTED, SweepFolderUsed, claim_sweep_folder
from .cluster import exit_with_error
from .errors import USER_ERRORS, one_line
from .prepare import hand_over, prepare
from .sweep_stopped import note_sweep
from .typed import typed_hydra_overrides, typed_overrides


def _keep_first_hydra_files(config: DictConfig, run_dir: Path, step: int) -> None:
    """Have Hydra write this resume's config to .hydra/resumed_step_<step>/, keeping the run's own .hydra files."""
    if not (run_dir / ".hydra").is_dir():
        return
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = f".hydra/{resumed_name(run_dir / '.hydra', step)}"


def _run_dir_given(config: DictConfig) -> bool:
    """True when the user chose hydra.run.dir on the command line (else it is the dated default)."""
    return any(o.lstrip("+").startswith("hydra.run.dir=") for o in typed_hydra_overrides(config))


def claim(config: DictConfig, run_dir: Path) -> Path:
    """Claim Hydra's run folder (runs.folder.claim_run_folder); Hydra writes into <folder>_2 when it moved there."""
    try:
        claimed = claim_run_folder(run_dir, named=_run_dir_given(config))
    except ValueError as error:
        exit_with_error(str(error))
    if claimed != run_dir:
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.run.dir = str(claimed)
    return claimed


def _job_record(config: DictConfig) -> tuple[Path, list[str]] | None:
    """(the record of the runs this SLURM job started, this run's command) for the one run of a job at a time
    (cluster.jobs.one_run_job) in a folder Hydra dates; None elsewhere."""
    job = one_run_job()
    if job is None or _run_dir_given(config):
        return None
    return job_record(str(config.paths.root_dir), str(config.task_name), job), typed_overrides(config)


def _requeued_jobs_folder(config: DictConfig) -> Path | None:
    """In a job SLURM requeued, the folder its earlier attempt ran this command in, where Hydra now writes too (it
    resumes from its last.ckpt); None when there is none."""
    record = _job_record(config)
    folder = earlier_run(*record) if record is not None and slurm_requeued() else None
    if folder is not None:
        print(f"SLURM requeued the job: back into its run folder {folder}")
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.run.dir = str(folder)
    return folder


def _sweep_dir_given(config: DictConfig) -> bool:
    """True when the user chose hydra.sweep.dir on the command line (else it is the dated default)."""
    return any(o.lstrip("+").startswith("hydra.sweep.dir=") for o in typed_hydra_overrides(config))


def claim_sweep(config: DictConfig) -> None:
    """Claim the sweep folder (runs.sweep_folder): a sweep into a folder that another sweep runs in now, or that
    holds an earlier sweep's runs, would start each job over in them (job 0 in 0/), mixing or overwriting their
    checkpoints, .hydra files and metrics. A dated default taken in the same second moves to <time>_2, for the
    sweeper and for each job's config (composed again from the hydra overrides). A sweep given ckpt_path does
    not resume a used folder's jobs: each job would start from the sweep's overrides, not its own, and Hydra
    writes each job's .hydra files over its first ones before any check; each job is resumed on its own."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    try:
        claimed = claim_sweep_folder(sweep_dir, named=_sweep_dir_given(config))
    except SweepFolderUsed as used:
        if not used.runs:
            jobs = ", ".join(path.name for path in used.submitted[:4]) + (
                ", …" if len(used.submitted) > 4 else ""
            )
            exit_with_error(
                f"sweep folder {sweep_dir} holds jobs an earlier sweep submitted ({SUBMITTED}/: {jobs}), which train "
                "into its job folders when they run, queued or not: pick a new hydra.sweep.dir"
            )
        names = ", ".join(str(run.relative_to(sweep_dir)) for run in used.runs[:4]) + (
            ", …" if len(used.runs) > 4 else ""
        )
        resumable = [run for run in used.runs if has_last_checkpoint(run)]
        if (ckpt := OmegaConf.select(config, "ckpt_path")) is not None:
            advice = (
                f"resume each job on its own, train.py ckpt_path=last {pasteable('hydra.run.dir', resumable[0])}"
                if resumable
                else "none of them has a checkpoint to resume: drop ckpt_path and pick a new hydra.sweep.dir"
            )
            exit_with_error(
                f"sweep folder {sweep_dir} holds runs ({names}), which a sweep (-m) with ckpt_path={ckpt} does not "
                f"resume (its jobs would lose their own overrides and .hydra files): {advice}"
            )
        # Only a job with a checkpoint is named: a job refused before training would be refused again.
        resume = (
            f", or resume a stopped job with ckpt_path=last {pasteable('hydra.run.dir', resumable[0])}"
            if resumable
            else " (none of them has a checkpoint to resume)"
        )
        exit_with_error(
            f"sweep folder {sweep_dir} already holds runs ({names}); a sweep there would overwrite them: pick a new "
            f"hydra.sweep.dir{resume}"
        )
    except ValueError as error:
        exit_with_error(str(error))
    if claimed != sweep_dir:
        print(f"sweep folder {sweep_dir} was just taken by another sweep: this one runs in {claimed}")
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(claimed)
            quoted = str(claimed).replace("'", "\\'")
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir='{quoted}'")


def refuse_one_wandb_run_for_a_sweep(config: DictConfig) -> None:
    """logger.wandb.id set for a whole sweep: every job would log into that one W&B run, merging their curves and
    configs (an interpolation of the job, ${hydra:job.num}, gives each its own and is let through)."""
    wandb_cfg = OmegaConf.select(config, "logger.wandb")
    if (
        not OmegaConf.is_dict(wandb_cfg)
        or "id" not in wandb_cfg
        or OmegaConf.is_interpolation(wandb_cfg, "id")
    ):
        return
    if wandb_cfg.id:
        exit_with_error(
            f"logger.wandb.id={wandb_cfg.id} in a sweep would log every job into that one W&B run, merging their "
            "curves and configs: drop it (each job gets its own run, kept when it is resumed)"
        )


def refuse_a_search_the_formulation_ignores(config: DictConfig) -> None:
    """An Optuna search over the noise schedule (hparams_search=ddpm_optuna) for an EDM or flow model: every trial
    was refused in turn (those formulations build their own noise levels), then optuna ended in a traceback."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    searched = [key for key in params if key == "schedule" or str(key).startswith("schedule.")]
    formulation = OmegaConf.select(config, "hydra.runtime.choices.formulation")
    if searched and formulation not in (None, "vp"):
        exit_with_error(
            f"the search space (hydra.sweeper.params) holds {searched[0]}, which formulation={formulation} does not "
            f"read (it builds its own noise levels): search a vp recipe (experiment=digits_cpu), or leave it out "
            f"with ~hydra.sweeper.params.{searched[0]}"
        )


def hold(run_dir: Path, requeued: bool) -> None:
    """Lock the run folder while this run trains (runs.folder.hold_run_folder): a resume started while the run
    still trains there is refused. A requeued job goes on with a warning: its earlier attempt has ended, and a
    lock still seen is one a network file system has not let go of yet (a crashed node's)."""
    try:
        hold_run_folder(run_dir)
    except ValueError as error:
        if not requeued:
            exit_with_error(str(error))
        print(f"warning: {error}; going on, as this job was requeued")


class Preflight(Callback):
    """on_run_start runs before Hydra creates the run folder or writes .hydra/ into it; on_multirun_start before
    the launcher writes any job's folder."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_a_search_the_formulation_ignores(config)
        refuse_one_wandb_run_for_a_sweep(config)
        # Last: a sweep refused makes no folder.
        if not is_secondary_rank():  # torchrun's other ranks run the same sweep into the folders rank 0 makes
            claim_sweep(config)
        note_sweep(config)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_secondary_rank():
            return  # other ranks share the folder rank 0 has just claimed
        earlier = _requeued_jobs_folder(config)
        run_dir = earlier or Path(str(config.hydra.run.dir))
        try:
            with kept_for_the_log():  # a resume's warnings, for the train.log Hydra opens next
                settings = prepare(config, run_dir)
            named, requeued = _run_dir_given(config), is_requeued_job()
            reenter = reenters_run_folder(run_dir, settings.resume, named, requeued)
            check_room_to_start(run_dir)
        except USER_ERRORS as error:
            exit_with_error(one_line(error))
        if not reenter:  # a dated folder another run took this second: claim moves on to <time>_2
            settings = replace(settings, run_dir=claim(config, run_dir))
        hold(settings.run_dir, requeued)
        if reenter and settings.resume is not None:
            _keep_first_hydra_files(config, run_dir, settings.step)
        share_run_folder(settings.run_dir)  # torchrun's other ranks wait for it (run.cli)
        if earlier is None and (record := _job_record(config)) is not None:
            remember_run(record[0], record[1], settings.run_dir)
        hand_over(settings)
