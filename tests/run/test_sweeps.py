"""Hydra sweeps: every job runs even when one fails, W&B runs are named and grouped per sweep, Optuna searches."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import CONF, FAST_TRAIN, PROBES, one_error_line, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from wandb_files import wandb_records

from difflab.run.common import optimized_metric
from difflab.run.errors import SweepConfigError, SweepJobFailed, exit_on_user_error
from difflab.run.resolvers import metric_key
from difflab.run.wandb_glue import name_wandb_run
from difflab.tracking.run_names import job_run_name

# FAST_TRAIN at 2 steps, the logger chosen per test.
SWEEP_FAST = [o for o in FAST_TRAIN if not o.startswith(("logger=", "trainer.max_steps="))] + [
    "trainer.max_steps=2"
]


def wandb_run_of(job_dir: Path) -> tuple[str, str, dict[str, Any]]:
    """(display name, group, logged config) of the single W&B run a job wrote."""
    (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
    name = group = None
    config: dict[str, Any] = {}
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name, group = record.run.display_name, record.run.run_group
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return name, group, config


def test_a_failed_job_does_not_stop_the_sweep_and_each_run_is_named(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train.py", "-m", "data.image_size=8,4,-1,6", *SWEEP_FAST, "logger=wandb", f"hydra.sweep.dir={sweep}"
    )
    # Job 2 reports its own line as it fails; the sweep goes on, then ends with a non-zero status.
    assert f"error: job #2 ({sweep / '2'}): data.image_size=-1 must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert not (sweep / "2" / "checkpoints").exists()
    for job, size in (("0", 8), ("1", 4), ("3", 6)):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        name, group, config = wandb_run_of(sweep / job)  # one W&B run per job, not one shared run
        assert name == (
            f"data.batch_size=16,data.image_size={size},model=unet_tiny,sampler.steps=2,"
            "trainer.max_steps=2,trainer.val_check_interval=2,trainer=cpu"
        )
        assert group == "sweep"  # the sweep's name, not a machine path (the folder lies outside the project)
        # the resolved config travels with the run, flat and without machine paths or _target_s
        assert config["optim.lr"] == pytest.approx(2e-4) and config["data.image_size"] == size
        assert config["choices.model"] == "unet_tiny" and config["parameters"] > 0
        assert not any(key.startswith(("paths.", "hydra.")) or "_target_" in key for key in config)
        assert not any(isinstance(v, str) and v.startswith("/") for v in config.values())


def test_optuna_search_runs_its_trials_and_reports_the_best(tmp_path):
    sweep = tmp_path / "optuna"
    # The README's storage keeps the study across invocations; before, optuna 2.10 failed on SQLAlchemy 2
    # (`assert version is not None` in its RDB storage) and left a broken database.
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli(
        "train.py",
        "-m",
        "hparams_search=ddpm_optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={storage}",
        "optimized_metric=val/loss",
        "callbacks=default",  # no FID callback: val/loss is the objective here
        *SWEEP_FAST,
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import optuna

    kept = optuna.load_study(study_name="ddpm", storage=storage)
    assert [t.state.name for t in kept.trials] == ["COMPLETE", "COMPLETE"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optim.lr", "schedule", "model.dropout"}
    final_val_losses = []
    for trial in ("0", "1"):
        rows = list(csv.DictReader((sweep / trial / "csv" / "metrics.csv").open()))
        final_val_losses.append(float([r for r in rows if r.get("val/loss")][-1]["val/loss"]))
    assert best["best_value"] == pytest.approx(min(final_val_losses))
    # A trial resumes in its own folder, as the README says a sweep's job does: before, the inherited
    # hparams_search started a new 20-trial search under multirun/ in the project.
    trial = sweep / "0"
    resumed = run_cli("train.py", "ckpt_path=last", f"hydra.run.dir={trial}", "trainer.max_steps=4")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (
        torch.load(trial / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
        == 4
    )
    # Searching the kept study again draws new points: before, its seeded sampler repeated the first search's.
    again = run_cli(
        "train.py", "-m", "hparams_search=ddpm_optuna", "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={storage}", "optimized_metric=val/loss", "callbacks=default", *SWEEP_FAST,
        "logger=csv", f"hydra.sweep.dir={tmp_path / 'again'}",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    lrs = [t.params["optim.lr"] for t in optuna.load_study(study_name="ddpm", storage=storage).trials]
    assert len(lrs) == 4 and len(set(lrs)) == 4, lrs


def test_a_trial_resumes_with_its_searchs_callbacks_and_metric(tmp_path):
    # Review: not inheriting hparams_search dropped what it sets, the FID callback and optimized_metric: a trial's
    # callbacks.fid.* override was then "not a key of the train config", and without one the resume ran without
    # the FID callback.
    trial = tmp_path / "sweep" / "0"
    (trial / ".hydra").mkdir(parents=True)
    (trial / ".hydra" / "overrides.yaml").write_text(
        "- optim.lr=0.0001\n- hparams_search=ddpm_optuna\n- callbacks.fid.num_samples=16\n- model=unet_tiny\n"
    )
    shown = run_cli("train.py", "--cfg", "job", "ckpt_path=last", f"hydra.run.dir={trial}")
    assert shown.returncode == 0, shown.stderr[-2000:]
    config = yaml.safe_load(shown.stdout[shown.stdout.index("task_name") :])
    assert config["optimized_metric"] == "val/fd_effl0" and config["callbacks"]["fid"]["num_samples"] == 16


def test_optuna_search_takes_a_dit(tmp_path):
    # The search space holds model.dropout; before, a DiT had none and the search aborted before its first trial
    # ("Could not override 'model.dropout'").
    sweep = tmp_path / "optuna"
    fast = [o for o in SWEEP_FAST if not o.startswith("model=")]
    result = run_cli(
        "train.py",
        "-m",
        "hparams_search=ddpm_optuna",
        "hydra.sweeper.n_trials=1",
        "optimized_metric=val/loss",
        "callbacks=default",
        *fast,
        "model=dit_tiny",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optim.lr", "schedule", "model.dropout"}
    config = yaml.safe_load((sweep / "0" / ".hydra" / "config.yaml").read_text())
    assert config["model"]["_target_"] == "difflab.models.DiT"
    assert config["model"]["dropout"] == best["best_params"]["model.dropout"]


def test_optuna_config_minimises_the_fid_callbacks_score(hydra_job):
    cfg = hydra_job(["hparams_search=ddpm_optuna"])
    sweeper = HydraConfig.get().sweeper
    assert sweeper.direction == "minimize" and sweeper.n_trials == 20
    assert set(sweeper.params) == {"optim.lr", "schedule", "model.dropout"}
    assert cfg.optimized_metric == "val/fd_effl0" == f"val/{metric_key(cfg.metrics.extractor)}"
    assert "fid" in cfg.callbacks


# --- the pieces, without subprocesses ----------------------------------------------------------------


@pytest.fixture
def hydra_job():
    """Compose like a Hydra app would and make it the current HydraConfig; returns the job's cfg."""

    def make(overrides: list[str], job_num: int = 0) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            full = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        with open_dict(full):
            full.hydra.job.num = job_num
        HydraConfig.instance().set_config(full)
        cfg = full.copy()
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_run_names_leave_out_paths_loggers_and_callbacks():
    overrides = [
        "schedule=cosine",
        "optim.lr=1e-4",
        "data.root=/data",
        "logger=wandb",
        "callbacks.ema.decay=0.9",
    ]
    assert job_run_name([*overrides, "seed=3", "paths.data_dir=/d"]) == "optim.lr=1e-4,schedule=cosine,seed=3"
    assert job_run_name(["logger=csv"]) is None
    # Where caches live says nothing of what is trained (before: "metrics.cache_dir=/tmp/…/cache" in the name).
    caches = ["metrics.cache_dir=/c", "data.text_cache_dir=/t", "latent_cache_dir=/l", "data.download=true"]
    assert job_run_name([*caches, "seed=3"]) == "seed=3"


def test_run_names_give_paths_in_the_project_relative_to_it():
    # Before: init_from=/home/<user>/difflab/outputs/... (a machine path, most of a W&B table's column).
    overrides = ["init_from=/home/me/difflab/outputs/train/a/last.ckpt", "guide=/elsewhere/b.ckpt", "seed=3"]
    assert job_run_name(overrides, root_dir="/home/me/difflab") == (
        "guide=/elsewhere/b.ckpt,init_from=outputs/train/a/last.ckpt,seed=3"
    )


def test_a_single_run_is_named_from_its_experiment_and_overrides(hydra_job):
    cfg = hydra_job(["experiment=digits_cpu", "optim.lr=1e-4", "hydra.run.dir=/somewhere"])
    name_wandb_run(cfg)
    assert cfg.logger.wandb.name == "digits_cpu: optim.lr=1e-4"
    assert (cfg.logger.wandb.group, cfg.logger.wandb.job_type) == ("digits_cpu", "train")
    assert list(cfg.logger.wandb.tags) == ["digits_cpu"]
    plain = hydra_job([])
    name_wandb_run(plain)
    assert plain.logger.wandb.name is None  # nothing to say: W&B picks a name


def test_multirun_job_is_named_from_overrides_grouped_by_sweep_and_tagged(hydra_job, tmp_path):
    sweep = tmp_path / "multirun" / "lr"
    cfg = hydra_job(
        [
            "hydra.mode=MULTIRUN",
            f"hydra.sweep.dir={sweep}",
            "experiment=digits_cpu",
            "tags=[mine]",
            "optim.lr=1e-4",
        ]
    )
    name_wandb_run(cfg)
    assert cfg.logger.wandb.name == "digits_cpu: optim.lr=1e-4"
    assert cfg.logger.wandb.group == "lr"  # outside the project: the sweep folder's name
    assert list(cfg.logger.wandb.tags) == ["mine", "digits_cpu"]


@pytest.mark.parametrize("experiment", [[], ["experiment=digits_cpu"]])
def test_a_single_tag_is_one_tag(hydra_job, experiment):
    # Hydra reads tags=foo as the string "foo": before, W&B got the tags f, o, o.
    cfg = hydra_job([*experiment, "tags=foo"])
    name_wandb_run(cfg)
    assert list(cfg.logger.wandb.tags) == ["foo", *(["digits_cpu"] if experiment else [])]


def test_a_sweep_in_the_project_is_grouped_by_its_folder_relative_to_the_project(hydra_job):
    cfg = hydra_job(["hydra.mode=MULTIRUN", "optim.lr=1e-4"])  # the default multirun/train/<date>/<time>
    name_wandb_run(cfg)
    assert re.fullmatch(r"multirun/train/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", cfg.logger.wandb.group)
    cfg = hydra_job(["hydra.mode=MULTIRUN", "hydra.sweep.dir=multirun/lr_vs_schedule"])
    name_wandb_run(cfg)
    assert cfg.logger.wandb.group == "multirun/lr_vs_schedule"


def test_multirun_keeps_a_name_the_user_set(hydra_job):
    cfg = hydra_job(["hydra.mode=MULTIRUN", "logger.wandb.name=baseline", "logger.wandb.group=g", "seed=1"])
    name_wandb_run(cfg)
    assert (cfg.logger.wandb.name, cfg.logger.wandb.group) == ("baseline", "g")


def test_optimized_metric_returns_the_value_or_names_what_was_logged():
    metrics = {"val/loss": 0.25, "train/loss": 0.3}
    assert optimized_metric(DictConfig({"optimized_metric": "val/loss"}), metrics) == 0.25
    assert optimized_metric(DictConfig({"optimized_metric": None}), metrics) is None
    with pytest.raises(SweepConfigError, match="val/fd_effl0 was not logged.*train/loss, val/loss"):
        optimized_metric(DictConfig({"optimized_metric": "val/fd_effl0"}), metrics)


def test_user_error_in_a_sweep_job_fails_only_that_job(hydra_job, capsys):
    hydra_job(["hydra.mode=MULTIRUN", "hydra.sweep.dir=sweep"], job_num=3)

    @exit_on_user_error
    def bad_job() -> None:
        raise ValueError("image size 18 cannot be divided down")

    with pytest.raises(SweepJobFailed, match="job #3"):  # an Exception: Hydra's launcher moves on
        bad_job()
    assert "error: job #3 (sweep/3): image size 18 cannot be divided down" in capsys.readouterr().err

    @exit_on_user_error
    def unknown_metric() -> None:
        raise SweepConfigError("optimized_metric=val/x was not logged by this run")

    with pytest.raises(SystemExit) as stop:  # every job would repeat it: the sweep stops
        unknown_metric()
    assert stop.value.code == 2


def test_a_bug_in_a_sweep_job_shows_its_traceback_when_it_happens(hydra_job, caplog):
    hydra_job(["hydra.mode=MULTIRUN", "hydra.sweep.dir=sweep"], job_num=1)

    @exit_on_user_error
    def buggy_job() -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # Hydra records it and runs the next job
        buggy_job()
    (record,) = [r for r in caplog.records if r.name == "difflab"]
    assert "job #1 (sweep/1) failed" in record.getMessage() and record.exc_info[0] is RuntimeError


def test_a_sweep_into_a_folder_holding_runs_is_refused_and_leaves_them_untouched(tmp_path):
    # Before, the second sweep started each job over in 0/ and 1/: the first sweep's checkpoints and .hydra files
    # were replaced, and its metrics.jsonl mixed two runs.
    sweep = tmp_path / "sweep"
    first = run_cli(
        "train.py", "-m", "optim.lr=1e-3,2e-4", *SWEEP_FAST, "logger=none", f"hydra.sweep.dir={sweep}"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    kept = {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()}
    again = run_cli("train.py", "-m", "optim.lr=5e-3", *SWEEP_FAST, "logger=none", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
        f"error: sweep folder {sweep} already holds runs (0, 1); a sweep there would overwrite them: pick a new "
        f"hydra.sweep.dir, or resume a stopped job with ckpt_path=last hydra.run.dir={sweep / '0'}"
    )
    assert {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()} == kept


def test_runs_that_left_only_their_metrics_are_runs_to_a_new_sweep_and_to_compare(tmp_path):
    # Before, a sweep with hydra.output_subdir=null (no .hydra/) and no checkpoint left runs that a second sweep into
    # the same folder trained over (their metrics set aside), and compare said the folder held no run logs.
    from difflab.compare import find_runs

    sweep = tmp_path / "sweep"
    plain = [o for o in SWEEP_FAST if not o.startswith("callbacks.")] + ["logger=none", "callbacks=none"]
    plain += ["hydra.output_subdir=null", f"hydra.sweep.dir={sweep}"]
    first = run_cli("train.py", "-m", "optim.lr=1e-3,2e-4", *plain)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not list(sweep.glob("*/.hydra")) and not list(sweep.glob("*/checkpoints"))
    assert find_runs([sweep]) == [sweep / "0", sweep / "1"]
    kept = {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()}
    again = run_cli("train.py", "-m", "optim.lr=5e-3", *plain)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith(
        f"error: sweep folder {sweep} already holds runs (0, 1); a sweep there would overwrite them"
    ), again.stderr[-2000:]
    assert {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()} == kept


def test_a_sweep_into_a_folder_whose_jobs_were_submitted_to_a_cluster_is_refused(tmp_path):
    # Before, a second sweep took the folder while the first one's SLURM jobs waited in the queue (its process
    # stopped): each job of the second then resumed the first's checkpoint as its own, under its own overrides.
    sweep = tmp_path / "sweep"
    (sweep / ".submitit" / "4242").mkdir(parents=True)
    result = run_cli(
        "train.py", "-m", "optim.lr=1e-3", *SWEEP_FAST, "logger=none", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"error: sweep folder {sweep} holds jobs an earlier sweep submitted (.submitit/: 4242), which train into its "
        "job folders when they run, queued or not: pick a new hydra.sweep.dir"
    ), result.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit"]


def test_a_stop_that_ends_a_sweep_names_the_jobs_that_did_not_run(tmp_path):
    # Before, a SIGTERM in job #0 ended the sweep with job #0's line alone: jobs #1 and #2 were dropped without a word
    # (and a rerun into the sweep folder is refused, as it holds job #0's run).
    sweep = tmp_path / "sweep"
    probe = ["+callbacks.probe._target_=signal_probe.StepProbe", "+callbacks.probe.signal_name=SIGTERM"]
    probe += [f"+callbacks.probe.dirpath={tmp_path / 'probe'}", "+callbacks.probe.signal_at_step=1"]
    result = run_cli(
        "train.py",
        "-m",
        "optim.lr=1e-3,2e-3",
        "seed=0,1",
        *SWEEP_FAST,
        "logger=none",
        *probe,
        f"hydra.sweep.dir={sweep}",
        env=PROBES,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("stopped on SIGTERM at step "), result.stderr[-2000:]
    assert lines[-1] == (
        # As Hydra's own "Launching" lines name them.
        "error: 3 of the sweep's 4 jobs did not run: #1 (optim.lr=0.001 seed=1), #2 (optim.lr=0.002 seed=0), "
        "#3 (optim.lr=0.002 seed=1); sweep them again into a new hydra.sweep.dir"
    )
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "multirun.yaml"]


def test_a_sweep_ended_by_a_refusal_names_no_jobs_to_sweep_again(tmp_path):
    # Review: the line came after any exit, also after a refusal every job would meet alike.
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train.py",
        "-m",
        "seed=1,2",
        "optimized_metric=val/x",
        *SWEEP_FAST,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "optimized_metric=val/x was not logged by this run" in result.stderr.strip().splitlines()[-1]
    assert "did not run" not in result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["a=1,2", "b=x,y,z"],
        ["b=x,y", "a=1", "c=3,4"],
        ["a=1,2", "a=3"],
        ["a=range(0,3)", "b=[1,2]"],
        ["a=1"],
        # A key swept again after a single value keeps its first place (review: named b=x a=3, run as a=3 b=x).
        ["a=1,2", "a=5", "b=x,y", "a=3,4"],
    ],
)
def test_the_jobs_said_not_run_are_hydras_own_jobs_in_its_order(overrides):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from difflab.run.sweep_stopped import _basic_sweep_jobs

    config = OmegaConf.create({"hydra": {"overrides": {"task": overrides}, "sweeper": {"params": None}}})
    parsed = OverridesParser.create().parse_overrides(overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    swept = {
        key for key, sweep in {o.get_key_element(): o.is_sweep_override() for o in parsed}.items() if sweep
    }
    # Hydra's jobs carry every override; the line names the swept ones.
    assert _basic_sweep_jobs(config) == [
        " ".join(o for o in job if o.split("=")[0] in swept) for job in batch
    ]


def test_a_sweep_of_runs_on_several_processes_lightning_starts_is_refused_before_any_job(tmp_path):
    # Before, job 0's second process reran the sweep's command, was refused, and Lightning killed the sweep (rc 137).
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train.py", "-m", "optim.lr=1e-3", *SWEEP_FAST, "trainer=ddp", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: trainer.devices=2 cannot train in a sweep (-m) on this machine: Lightning starts a run's other "
        "processes by running the command again"
    )
    assert not sweep.exists()


def test_a_swept_device_count_fails_only_the_job_that_would_start_processes(tmp_path):
    # Before, job 1's second process reran the whole sweep (refused: "hydra.run.dir=… is not read by a sweep"), and
    # Lightning killed the sweep with SIGKILL (rc 137); the check before the sweep saw only its fixed settings.
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train.py", "-m", "trainer.devices=1,2", *SWEEP_FAST, "logger=none", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 1, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert said[0] == (
        f"error: job #1 ({sweep / '1'}): trainer.devices=2 cannot train in a sweep (-m) on this machine: Lightning "
        "starts a run's other processes by running the command again, which here is the whole sweep; run the jobs "
        "one at a time, or submit the sweep with hydra/launcher=slurm (one task per device)"
    ), result.stderr[-2000:]
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "1" / "checkpoints").exists()


@pytest.mark.parametrize("accelerator, refused", [("auto", True), ("cpu", False)])
def test_a_sweep_whose_devices_auto_takes_several_gpus_is_refused(
    tmp_path, monkeypatch, capsys, accelerator, refused
):
    # Before, trainer.devices=auto passed: on a 2-GPU machine Lightning then started job 0's second process by
    # rerunning the whole sweep, as trainer.devices=2 did.
    import torch

    from difflab.run.cluster import refuse_relaunched_processes_in_a_sweep

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    overrides = [f"hydra.sweep.dir={tmp_path}", "trainer.devices=auto", f"trainer.accelerator={accelerator}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose("train", overrides=overrides, return_hydra_config=True)
    if not refused:
        refuse_relaunched_processes_in_a_sweep(config)
        return
    with pytest.raises(SystemExit):
        refuse_relaunched_processes_in_a_sweep(config)
    assert capsys.readouterr().err.startswith(
        "error: trainer.devices=auto (all 2 GPUs here) cannot train in a sweep (-m) on this machine"
    )


def test_a_slurm_sweep_is_left_to_slurm_and_submitit_local_with_several_devices_is_refused(
    tmp_path, monkeypatch, capsys
):
    from difflab.run.cluster import refuse_relaunched_processes_in_a_sweep

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    slurm = [
        "hydra/launcher=slurm",
        "trainer=slurm",
        "hydra.launcher.partition=gpu",
        f"hydra.sweep.dir={tmp_path}",
    ]
    local = [
        "hydra/launcher=submitit_local",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        slurm_config = compose("train", overrides=slurm, return_hydra_config=True)
        local_config = compose("train", overrides=local, return_hydra_config=True)
    # Before: "InterpolationResolutionError: HydraConfig was not set" from trainer=slurm's devices, which Hydra
    # turned into a warning that one of difflab's checks had failed, on the README's own SLURM command.
    refuse_relaunched_processes_in_a_sweep(slurm_config)
    # Before, submitted: Lightning reran submitit's job runner as rank 1, which failed on Hydra's arguments.
    with pytest.raises(SystemExit):
        refuse_relaunched_processes_in_a_sweep(local_config)
    assert capsys.readouterr().err.startswith(
        "error: trainer.devices=2 cannot train under hydra/launcher=submitit_local: Lightning starts a run's other "
        "processes by running the command again, which here is submitit's job runner"
    )


def test_a_sharded_trainer_that_does_not_match_the_slurm_launcher_is_not_sent_to_trainer_slurm():
    # trainer=slurm is DDP: before, that advice swapped FSDP for DDP without a word.
    from difflab.cluster.devices import check_matches_launcher

    with pytest.raises(
        ValueError, match=r"give trainer.devices=8 \(trainer=slurm would train with DDP instead\)$"
    ):
        check_matches_launcher({"devices": 2, "num_nodes": 1, "strategy": "sharded"}, {"tasks_per_node": 8})
    # Before, "use trainer=slurm" also where trainer=slurm was given with its trainer.devices overridden.
    with pytest.raises(
        ValueError,
        match=r"; use trainer=slurm without a trainer.devices= of its own \(it reads both from the launcher\), or "
        r"give trainer.devices=8$",
    ):
        check_matches_launcher({"devices": 2, "num_nodes": 1, "strategy": "ddp"}, {"tasks_per_node": 8})


def test_the_other_ranks_of_a_launched_sweep_share_its_job_folders(tmp_path, monkeypatch):
    # torchrun's other ranks run the same sweep into the folders rank 0 has just made: not "a used sweep folder".
    from difflab.run.preflight import Preflight

    (tmp_path / "0" / "checkpoints").mkdir(parents=True)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose("train", overrides=[f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    monkeypatch.setenv("RANK", "1")
    Preflight().on_multirun_start(config)  # no refusal
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit):
        Preflight().on_multirun_start(config)


def test_an_optuna_search_over_a_schedule_a_flow_model_ignores_is_refused_before_its_trials(tmp_path):
    # Before, each of the 20 trials was refused in turn, and optuna then ended in "No trials are completed yet".
    sweep = tmp_path / "optuna"
    result = run_cli(
        "train.py", "hparams_search=ddpm_optuna", "experiment=digits_flow_cpu", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: the search space (hydra.sweeper.params) holds schedule, which formulation=flow does not read (it "
        "builds its own noise levels): search a vp recipe (experiment=digits_cpu), or leave it out with "
        "~hydra.sweeper.params.schedule"
    )
    assert not sweep.exists()


@pytest.mark.parametrize(
    ("space", "said"),
    [
        (
            'hydra.sweeper.params={schedule:"choice(linear, cosnie)"}',
            "schedule: schedule=cosnie is not an option; did you mean schedule=cosine?",
        ),
        (
            '+hydra.sweeper.params.sedd="choice(0, 1)"',
            "sedd: sedd is not a key of the train config; did you mean seed?",
        ),
    ],
)
def test_a_typo_in_an_optuna_search_space_is_refused_before_its_trials(tmp_path, space, said):
    # Before, trial 0 trained in full, then the trial that drew the typo ended the search in Hydra's words ("Could
    # not find 'schedule/cosnie'", its config search path) with no optimization_results.yaml.
    sweep = tmp_path / "optuna"
    result = run_cli(
        "train.py", "hparams_search=ddpm_optuna", "experiment=digits_cpu", space, f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: the search space (hydra.sweeper.params) holds {said}")
    ), result.stderr
    assert not sweep.exists()


def held_by_another_process(folder: Path, mark: str) -> Any:
    """`folder`'s lock `mark` held as another live sweep or run holds it (open until the file is closed)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    opened = (folder / mark).open("a+")
    opened.write("pid 4242 on elsewhere\n")
    opened.flush()
    fcntl.flock(opened.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return opened


def test_a_sweep_into_a_folder_another_sweep_runs_in_now_is_refused_before_any_job(tmp_path):
    # Before, both sweeps trained job 0 in 0/ and reported success: one metrics.jsonl with both runs' lines, the
    # first sweep's .hydra files and the second's last.ckpt.
    sweep = tmp_path / "sweep"
    other = held_by_another_process(sweep, ".difflab-sweep")
    try:
        result = run_cli("train.py", "-m", *SWEEP_FAST, "logger=none", f"hydra.sweep.dir={sweep}")
    finally:
        other.close()
    assert one_error_line(result) == (
        f"error: sweep folder {sweep} is in use by a sweep running there now (pid 4242 on elsewhere): its jobs "
        "would train into the same folders; pick a new hydra.sweep.dir"
    )
    assert sorted(p.name for p in sweep.iterdir()) == [".difflab-sweep"]


def test_a_sweep_started_in_a_second_another_sweep_took_moves_to_time_2(tmp_path):
    # The dated sweep folder of every second in the next two minutes is held by a sweep running there. Before,
    # this sweep's job trained into that sweep's 0/ too.
    import datetime

    now, held = datetime.datetime.now(), {}
    for second in range(120):
        moment = now + datetime.timedelta(seconds=second)
        folder = tmp_path / "multirun" / "train" / moment.strftime("%Y-%m-%d") / moment.strftime("%H-%M-%S")
        held[folder] = held_by_another_process(folder, ".difflab-sweep")
    try:
        result = run_cli("train.py", "-m", *SWEEP_FAST, "logger=none", env={"DIFFLAB_ROOT": str(tmp_path)})
    finally:
        for opened in held.values():
            opened.close()
    assert result.returncode == 0, result.stderr[-2000:]
    (job,) = [p.parent for p in tmp_path.rglob("checkpoints")]
    assert (
        job.name == "0"
        and job.parent.name.endswith("_2")
        and job.parent.with_name(job.parent.name[:-2]) in held
    )
    assert all(sorted(p.name for p in folder.iterdir()) == [".difflab-sweep"] for folder in held)
    assert "was just taken by another sweep: this one runs in" in result.stdout


def test_a_sweeps_job_holds_its_folder_as_a_single_run_does(tmp_path):
    # A run training in job 0's folder (a resume started into it, ckpt_path=last hydra.run.dir=<sweep>/0): before,
    # the job trained there too without a word, writing the same checkpoints and metrics.
    sweep = tmp_path / "sweep"
    other = held_by_another_process(sweep / "0", ".difflab-training")
    try:
        result = run_cli("train.py", "-m", *SWEEP_FAST, "logger=none", f"hydra.sweep.dir={sweep}")
    finally:
        other.close()
    assert result.returncode == 1
    assert (
        f"error: job #0 ({sweep / '0'}): run folder {sweep / '0'} is in use by a run still training there (pid "
        in (result.stderr)
    )
    assert not (sweep / "0" / "checkpoints").exists() and not (sweep / "0" / "metrics.jsonl").exists()


def test_a_sweep_resume_into_a_used_sweep_folder_is_refused_before_anything_is_written(tmp_path, cli_run):
    # Before, each job was refused "config contradicts checkpoint … drop those overrides" (it did not start from
    # its own overrides), after Hydra had written its .hydra files over the job's first ones and multirun.yaml.
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(cli_run, sweep / "0")
    kept = {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()}
    result = run_cli("train.py", "-m", "ckpt_path=last", f"hydra.sweep.dir={sweep}")
    assert one_error_line(result) == (
        f"error: sweep folder {sweep} holds runs (0), which a sweep (-m) with ckpt_path=last does not resume (its "
        "jobs would lose their own overrides and .hydra files): resume each job on its own, train.py "
        f"ckpt_path=last hydra.run.dir={sweep / '0'}"
    )
    assert {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()} == kept


def test_an_optuna_search_whose_every_trial_failed_says_so_in_one_line(tmp_path):
    # Before, the trials' errors were followed by optuna's traceback, "ValueError: No trials are completed yet."
    sweep = tmp_path / "optuna"
    result = run_cli(
        "train.py",
        "hparams_search=ddpm_optuna",
        "hydra.sweeper.n_trials=2",
        'hydra.sweeper.params={model.dropout:"choice(2.0, 3.0)"}',
        "optimized_metric=val/loss",
        "callbacks=default",
        *SWEEP_FAST,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: every trial of the search failed (2 of 2), so it has no best parameters: their errors are above and "
        f"in {sweep}/<trial>/train.log; fix the cause and search again"
    )
    assert (sweep / "0" / "train.log").is_file() and (sweep / "1" / "train.log").is_file()
    assert not (sweep / "optimization_results.yaml").exists()


def test_a_sweep_subdir_named_by_job_number_is_used(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train.py",
        "-m",
        "data.image_size=-1",
        "hydra.sweep.subdir=job${hydra.job.num}",
        f"hydra.sweep.dir={sweep}",
    )
    # The job runs into its own numbered folder and is refused there for its value, not for the subdir.
    assert f"error: job #0 ({sweep / 'job0'}) failed: data.image_size=-1 must be at least 1" in result.stderr
    assert "MissingMandatoryValue" not in result.stderr


def test_a_used_sweep_folder_names_only_jobs_with_a_checkpoint_to_resume(tmp_path):
    # Before, a job refused before training (no checkpoint) was named for ckpt_path=last, which refused it again.
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "data.image_size=-1", f"hydra.sweep.dir={sweep}")
    again = run_cli("train.py", "-m", "data.image_size=-1", f"hydra.sweep.dir={sweep}")
    assert one_error_line(again) == (
        f"error: sweep folder {sweep} already holds runs (0); a sweep there would overwrite them: pick a new "
        "hydra.sweep.dir (none of them has a checkpoint to resume)"
    )
    shutil.copytree(sweep / "0", sweep / "0b")
    (sweep / "0b" / "checkpoints" / "last.ckpt").mkdir(
        parents=True
    )  # shards cut short: no index, not resumable
    again = run_cli("train.py", "-m", "data.image_size=-1", f"hydra.sweep.dir={sweep}")
    assert one_error_line(again).endswith("(none of them has a checkpoint to resume)")
    shutil.rmtree(sweep / "0b")
    shutil.copytree(sweep / "0", sweep / "1")
    (sweep / "1" / "checkpoints").mkdir()
    (sweep / "1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    again = run_cli("train.py", "-m", "data.image_size=-1", f"hydra.sweep.dir={sweep}")
    assert one_error_line(again).endswith(
        f"or resume a stopped job with ckpt_path=last hydra.run.dir={sweep / '1'}"
    )
    resumed = run_cli("train.py", "-m", "ckpt_path=last", f"hydra.sweep.dir={sweep}")
    assert one_error_line(resumed).endswith(f"train.py ckpt_path=last hydra.run.dir={sweep / '1'}")
