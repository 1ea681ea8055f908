"""Resume and cluster input that cannot work gets one clear line, and nothing in the run folder changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import submitit
import torch
from conftest import CONF, FAST_TRAIN, one_error_line, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from difflab.cluster.devices import check_devices, check_nodes

CLI_FAST = [o for o in FAST_TRAIN if o != "logger=csv"] + ["logger=none", "cpu_threads=1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step run made by the CLI, so it has .hydra/ and a train.log like a user's run folder."""
    run = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli("train.py", *CLI_FAST, "trainer.max_steps=2", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model=unet_small"], ["model.base_channels=32 (checkpoint: 16)"]),
        (
            ["data.channels=3", "prediction_type=v", "schedule=cosine", "optim.lr=0.01"],
            [
                "data.channels=3 (checkpoint: 1)",
                "prediction_type=v (checkpoint: epsilon)",
                "schedule.name=cosine (checkpoint: linear)",
                "optim.lr=0.01 (checkpoint: 0.0002)",
            ],
        ),
    ],
    ids=["model-size", "channels-prediction-schedule-lr"],
)
def test_resume_that_contradicts_the_checkpoint_is_refused_before_anything_is_written(
    cli_run, overrides, named
):
    before = snapshot(cli_run)
    line = one_error_line(
        run_cli("train.py", *CLI_FAST, f"hydra.run.dir={cli_run}", "ckpt_path=last", *overrides)
    )
    assert line.startswith(
        f"error: the config contradicts checkpoint {cli_run / 'checkpoints' / 'last.ckpt'}"
    )
    for item in named:
        assert item in line
    assert snapshot(cli_run) == before


@pytest.mark.slow
def test_a_resume_keeps_the_runs_own_hydra_files(cli_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    first = (run / ".hydra" / "config.yaml").read_text()
    result = run_cli("train.py", *CLI_FAST, "trainer.max_steps=3", f"hydra.run.dir={run}", "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / ".hydra" / "config.yaml").read_text() == first
    resumed = OmegaConf.load(run / ".hydra" / "resumed_step_0000002" / "config.yaml")
    assert resumed.trainer.max_steps == 3 and resumed.ckpt_path == "last"


@pytest.mark.slow
def test_resume_reuses_the_runs_own_overrides(cli_run, tmp_path):
    """`ckpt_path=last hydra.run.dir=<run>` is enough: the run was made with unet_tiny, csv off, … (CLI_FAST)."""
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    result = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming with the run's own overrides: model=unet_tiny" in result.stdout
    assert "trainer.max_steps=2" not in result.stdout  # the one given now wins
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert not (run / "checkpoints" / "last-v1.ckpt").exists()  # a moved folder keeps its own last.ckpt


def test_ckpt_path_last_without_a_checkpoint_names_where_it_looked(tmp_path):
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={run}", "ckpt_path=last"))
    assert line == (
        f"error: ckpt_path=last: no checkpoint at {run / 'checkpoints' / 'last.ckpt'}; pass "
        "hydra.run.dir=<the run folder to resume> or ckpt_path=<checkpoint file>"
    )
    assert not run.exists()


@pytest.mark.slow
def test_corrupt_checkpoint_on_resume_is_one_line_and_nothing_is_written(cli_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # cut short, as a kill during the write would leave it
    before = snapshot(run)
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={run}", "ckpt_path=last"))
    assert line.startswith(f"error: could not read checkpoint {last}")
    assert snapshot(run) == before


@pytest.mark.slow
def test_resuming_a_checkpoint_into_another_runs_folder_is_refused(cli_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(cli_run, other)
    before = snapshot(other)
    ckpt = cli_run / "checkpoints" / "last.ckpt"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={other}", f"ckpt_path={ckpt}"))
    assert f"run folder {other} already holds another run" in line
    assert f"hydra.run.dir={cli_run}" in line
    assert snapshot(other) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_gpus_on_a_machine_without_one(tmp_path):
    line = one_error_line(
        run_cli(
            "train.py", *CLI_FAST, "trainer=gpu", "trainer.devices=8", f"hydra.run.dir={tmp_path / 'run'}"
        )
    )
    assert "but this machine has no CUDA GPU that torch can see" in line
    assert "use trainer=cpu" in line


def test_asking_for_more_gpus_than_there_are(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"trainer.devices=8 asks for more GPUs than this machine has \(2\)"):
        check_devices(OmegaConf.create({"accelerator": "cuda", "devices": 8}))
    with pytest.raises(ValueError, match="asks for more GPUs"):
        check_devices(OmegaConf.create({"accelerator": "gpu", "devices": [0, 3]}))
    check_devices(OmegaConf.create({"accelerator": "gpu", "devices": "auto"}))
    check_devices(OmegaConf.create({"accelerator": "gpu", "devices": 2}))


def test_a_distributed_sampler_is_refused(tmp_path):
    line = one_error_line(
        run_cli("train.py", *CLI_FAST, "trainer.use_distributed_sampler=true", f"hydra.run.dir={tmp_path}/r")
    )
    assert "trainer.use_distributed_sampler=true would shard the data twice" in line


def test_slurm_launcher_without_a_partition_is_one_line_and_submits_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    line = one_error_line(
        run_cli("train.py", "-m", "hydra/launcher=slurm", "trainer=slurm", f"hydra.sweep.dir={sweep}")
    )
    assert line == (
        "error: hydra/launcher=slurm needs hydra.launcher.partition: add hydra.launcher.partition=<value> "
        "to the command"
    )
    assert not sweep.exists()


def test_slurm_launcher_without_multirun_would_train_here_and_is_refused(tmp_path):
    run = tmp_path / "run"
    line = one_error_line(
        run_cli("train.py", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.run.dir={run}")
    )
    assert "submits jobs only in multirun mode: add -m" in line
    assert not run.exists()


def test_slurm_trainer_without_the_slurm_launcher(tmp_path):
    line = one_error_line(
        run_cli("train.py", *CLI_FAST, "trainer=slurm", f"hydra.run.dir={tmp_path / 'run'}")
    )
    assert "trainer=slurm reads it from hydra/launcher=slurm" in line


def test_slurm_launcher_config_makes_the_sbatch_script_a_4x8_gpu_job_needs(tmp_path, monkeypatch):
    """The real plugin turns the config into an sbatch script (submission stopped just before sbatch)."""
    (tmp_path / "srun").write_text("#!/bin/sh\n")  # submitit checks that srun exists
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    overrides = [
        "hydra/launcher=slurm",
        "trainer=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=proj42",
        "hydra.launcher.nodes=4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    assert (cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.strategy) == (8, 4, "ddp")

    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    executors = []

    def stop_before_submitting(executor, fn, *args):
        executors.append(executor)
        raise RuntimeError("stop")

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", stop_before_submitting)
    with pytest.raises(RuntimeError, match="stop"):
        launcher.launch([["seed=1"]], initial_job_idx=0)
    script = executors[0]._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for flag in [
        "--nodes=4",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--cpus-per-task=8",
        "--partition=gpu",
        "--account=proj42",
        "--signal=USR2@180",
        "--time=1440",
        "--requeue",
    ]:
        assert f"#SBATCH {flag}\n" in script
    assert executors[0]._executor.max_num_timeout == 30


def test_several_nodes_with_nothing_to_start_them(monkeypatch):
    for var in ("SLURM_NTASKS", "MASTER_ADDR", "NODE_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="trainer.num_nodes=4 but nothing starts the other nodes"):
        check_nodes(OmegaConf.create({"accelerator": "cpu", "devices": 1, "num_nodes": 4}))
    monkeypatch.setenv("SLURM_NTASKS", "32")
    check_nodes(OmegaConf.create({"accelerator": "cpu", "devices": 1, "num_nodes": 4}))
