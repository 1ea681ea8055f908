"""Cluster and device input that cannot work (GPUs, nodes, the Slurm launcher) gets one clear line and starts
nothing; the Slurm launcher config makes the sbatch script a multi-node job needs."""

from __future__ import annotations

import os

import pytest
import submitit
import torch
from conftest import CLI_FAST, CONF, one_error_line, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from difflab.cluster.devices import check_devices, check_nodes, check_trainer, pick_device


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_gpus_on_a_machine_without_one(tmp_path):
    line = one_error_line(
        run_cli(
            "train.py", *CLI_FAST, "trainer=gpu", "trainer.devices=8", f"hydra.run.dir={tmp_path / 'run'}"
        )
    )
    assert "but this machine has no CUDA GPU that torch can see" in line
    assert "use trainer=cpu" in line


def test_a_refused_device_setting_writes_nothing(tmp_path):
    """A refused device or node setting leaves nothing behind: no fresh run folder, and a folder of the user's own
    keeps only what it held (before, .hydra/ and train.log were left in both)."""
    fresh, mine = tmp_path / "fresh", tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for folder in (fresh, mine):
        line = one_error_line(
            run_cli("train.py", *CLI_FAST, "trainer.num_nodes=2", f"hydra.run.dir={folder}")
        )
        assert "trainer.num_nodes=2 but nothing starts the other nodes" in line
    assert not fresh.exists()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_asking_for_more_gpus_than_there_are(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"trainer.devices=8 asks for more GPUs than this machine has \(2\)"):
        check_devices(OmegaConf.create({"accelerator": "cuda", "devices": 8}))
    with pytest.raises(ValueError, match="asks for more GPUs"):
        check_devices(OmegaConf.create({"accelerator": "gpu", "devices": [0, 3]}))
    check_devices(OmegaConf.create({"accelerator": "gpu", "devices": "auto"}))
    check_devices(OmegaConf.create({"accelerator": "gpu", "devices": 2}))


def test_more_cpu_processes_than_cores_is_warned_of(monkeypatch, caplog):
    # Before, trainer=cpu trainer.devices=64 on 2 cores spent minutes starting 64 processes without a word.
    from difflab.cluster.devices import warn_if_more_cpu_processes_than_cores

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with caplog.at_level("WARNING", logger="difflab"):
        warn_if_more_cpu_processes_than_cores({"accelerator": "cpu", "devices": 2})
        warn_if_more_cpu_processes_than_cores({"accelerator": "gpu", "devices": 64})
        assert not caplog.records
        warn_if_more_cpu_processes_than_cores({"accelerator": "cpu", "devices": 64})
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        warn_if_more_cpu_processes_than_cores({"accelerator": "auto", "devices": 3})
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "trainer.devices=64 starts 64 CPU processes on a machine with 2 cores",
        "trainer.devices=3 starts 3 CPU processes on a machine with 2 cores",
    ]
    assert caplog.records[0].getMessage() == (
        "trainer.devices=64 starts 64 CPU processes on a machine with 2 cores: they share the cores, each far "
        "slower; use trainer.devices=2 or fewer"
    )


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


@pytest.mark.parametrize(("tools", "missing"), [((), "sbatch and srun are"), (("sbatch",), "srun is")])
def test_slurm_launcher_on_a_machine_without_slurms_tools_is_one_line(tmp_path, tools, missing):
    # Before, sbatch without srun (a login node's PATH lacking it) gave submitit's traceback: 'Could not detect
    # "srun", are you indeed on a slurm cluster?'.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    sweep = tmp_path / "sweep"
    slurm = [
        "hydra/launcher=slurm",
        "trainer=slurm",
        "hydra.launcher.partition=gpu",
        f"hydra.sweep.dir={sweep}",
    ]
    line = one_error_line(run_cli("train.py", "-m", *slurm, env={"PATH": str(bin_dir)}))
    assert line == (
        f"error: hydra/launcher=slurm submits with sbatch and srun, and {missing} not on this machine's PATH: launch "
        "from a SLURM login node (or use hydra/launcher=submitit_local to try it here)"
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
    # A task that fails ends the job's other tasks, rather than leaving them waiting for it (30 minutes, GPUs held).
    srun_line = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun_line.split()


def test_several_nodes_with_nothing_to_start_them(monkeypatch):
    for var in ("SLURM_NTASKS", "MASTER_ADDR", "NODE_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="trainer.num_nodes=4 but nothing starts the other nodes"):
        check_nodes(OmegaConf.create({"accelerator": "cpu", "devices": 1, "num_nodes": 4}))
    monkeypatch.setenv("SLURM_NTASKS", "32")
    check_nodes(OmegaConf.create({"accelerator": "cpu", "devices": 1, "num_nodes": 4}))


def test_a_trainer_that_does_not_match_the_slurm_launcher_is_one_line(monkeypatch):
    """Under hydra/launcher=slurm, trainer.devices and num_nodes must be the job's tasks per node and nodes."""
    monkeypatch.setenv("SLURM_NTASKS", "32")
    launcher = {"tasks_per_node": 8, "nodes": 4}
    trainer = {"accelerator": "cpu", "devices": 8, "num_nodes": 4}
    check_trainer(trainer, launcher)
    with pytest.raises(
        ValueError, match=r"^trainer.devices=2 but hydra.launcher.tasks_per_node=8: Lightning would"
    ):
        check_trainer({**trainer, "devices": 2}, launcher)
    with pytest.raises(ValueError, match=r"^trainer.num_nodes=1 but hydra.launcher.nodes=4: "):
        check_trainer({**trainer, "num_nodes": 1}, launcher)
    check_trainer({**trainer, "devices": 2})  # no SLURM launcher: nothing to match


@pytest.mark.parametrize(
    ("name", "gpus", "message"),
    [
        ("cuda", 0, "device=cuda: this machine has no CUDA GPU; use device=auto or device=cpu"),
        ("cuda:1", 0, "device=cuda:1: this machine has no CUDA GPU; use device=auto or device=cpu"),
        ("cuda:2", 2, "device=cuda:2: this machine has 2 CUDA GPUs (cuda:0 to cuda:1)"),
        ("gpu", 0, "device=gpu is not a device: use auto, cpu, cuda or cuda:<index>"),
        # Before, these passed and torch failed later in a traceback ("PyTorch is not linked with support for xla
        # devices", "No module named 'torch.hpu'"), or, on meta, at sampling's first .item().
        ("xla", 0, "device=xla: this machine has no xla device; use device=auto, cpu or cuda"),
        ("hpu", 0, "device=hpu: this machine has no hpu device; use device=auto, cpu or cuda"),
        ("meta", 0, "device=meta holds no values (shapes only): use device=auto, cpu or cuda"),
    ],
)
def test_a_device_this_machine_does_not_have_is_one_line(monkeypatch, name, gpus, message):
    """sample.py / evaluate.py device=… and difflab.load(device=…): a GPU that is not there is named, not a
    traceback from deep inside torch ("Found no NVIDIA driver") once the model is being moved."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    with pytest.raises(ValueError) as error:
        pick_device(name)
    assert str(error.value) == message


def test_sample_py_on_a_gpu_that_is_not_there_writes_nothing(tiny_ckpt, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device=cuda is valid here")
    out = tmp_path / "out"
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", "n=2", "device=cuda", f"out={out}")
    assert (
        one_error_line(result)
        == "error: device=cuda: this machine has no CUDA GPU; use device=auto or device=cpu"
    )
    assert not out.exists()


def test_difflab_load_on_a_gpu_that_is_not_there_is_one_line(tiny_ckpt, monkeypatch):
    import difflab

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ValueError, match="^device=cuda: this machine has no CUDA GPU; use device=auto or device=cpu$"
    ):
        difflab.load(tiny_ckpt, device="cuda")
    assert difflab.load(tiny_ckpt, device=torch.device("cpu")).device.type == "cpu"


def test_a_sigterm_handler_a_launcher_set_is_kept_where_training_stops_at_once_on_sigterm():
    # submitit ignores SIGTERM in a job it may requeue (its requeue signal follows); train.py stopping at once on
    # SIGTERM there would end the job before submitit could requeue it.
    import signal

    from difflab.cluster.stop_signal import StoppedBySignal, stop_signal_raises

    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with stop_signal_raises(unless_handled=True):
            os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with pytest.raises(StoppedBySignal), stop_signal_raises(unless_handled=True):
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer=slurm", "hydra.launcher.gpus_per_node=4", "trainer.devices=8"],
            "error: trainer.devices=8 but hydra.launcher.tasks_per_node=4: Lightning would wait for ranks",
        ),
        (["trainer=cpu"], "error: trainer.devices=1 but hydra.launcher.tasks_per_node=8"),
        (
            ["trainer=slurm", "hydra.launcher.gpus_per_node=0"],
            "error: hydra.launcher.tasks_per_node=0 starts no task",
        ),
        (
            ["trainer=slurm", "hydra.launcher.timeout_min=2"],  # the default signal_delay_s: 180
            "error: hydra.launcher.signal_delay_s=180 is the job's whole time limit or more (timeout_min=2: 120 s)",
        ),
    ],
    ids=["devices over tasks", "no trainer=slurm", "no GPU", "stop signal at the start"],
)
def test_a_slurm_job_its_trainer_cannot_fill_is_refused_before_submitting(tmp_path, overrides, message):
    # Before, each was submitted (sbatch --gpus-per-node=4 for 8 devices, --ntasks-per-node=0) and failed, if at
    # all, inside the job after the queue's wait; a signal_delay_s past the limit, a job that stops as it starts.
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    ]
    assert one_error_line(run_cli("train.py", *command)).startswith(message)
    assert not sweep.exists()
