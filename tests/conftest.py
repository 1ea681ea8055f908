"""Shared fixtures: configs composed with Hydra's compose API, small enough to train in seconds on a CPU."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# run_cli(env=PROBES): this checkout's src/ and the tests' probes (tests/*_probe.py) importable in the process.
PROBES = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# One intra-op thread: on 2 cores, OpenMP threads of this process and of the subprocesses some tests
# start (CLI runs, DDP ranks) oversubscribe the CPU and spin, slowing small ops by up to 100x. Set here for the
# session fixtures, and again before every test by one_thread; run_cli gives subprocesses OMP_NUM_THREADS=1.
torch.set_num_threads(1)

# A few optimizer steps of a toy U-Net with grids and checkpoints every 2 steps.
FAST_TRAIN = [
    "model=unet_tiny",
    "trainer=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=16",
    "logger=csv",
    "sampler.steps=2",
    "callbacks.sample_grid.every_n_steps=2",
    "callbacks.sample_grid.num_samples=4",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]
# FAST_TRAIN for train.py in a subprocess: no logger to start, one CPU thread.
CLI_FAST = [o for o in FAST_TRAIN if o != "logger=csv"] + ["logger=none", "cpu_threads=1"]
# train.py as two CPU ranks of one DDP run (started by torchrun or srun), no logger, no grids.
TWO_CPU_RANKS = [
    "model=unet_tiny",
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=16",
    "logger=none",
    "sampler.steps=2",
    "callbacks.sample_grid.every_n_steps=0",
    "cpu_threads=1",
]
# evaluate.py at sizes that keep Lite0 to seconds on a CPU (the numbers are not meaningful, their equality is).
LITE_EVAL = [
    "metrics.num_reference=40",
    "metrics.kid_subset_size=10",
    "metrics.kid_subsets=10",
    "log_wandb=false",
]
# A toy f4 autoencoder on the 8x8 digits (2x2x3 latents): FAST_TRAIN without the sampling knobs.
TINY_AE = [
    *[o for o in FAST_TRAIN if not o.startswith(("model=", "callbacks.", "sampler."))],
    "model=autoencoder_kl_f4",
    "callbacks=autoencoder",
    "model.block_out_channels=[8,16,16]",
    "model.norm_num_groups=8",
    "model.layers_per_block=1",
    "optim.lr=3e-3",
    "callbacks.reconstruction_grid.every_n_steps=2",
    "callbacks.reconstruction_grid.num_images=8",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/<name>.yaml as the entry point would, writing into output_dir."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture(autouse=True)
def no_inherited_wandb_service(monkeypatch):
    """An in-process W&B run records its service's socket in os.environ (WANDB_SERVICE); a training subprocess
    started by a later test would inherit it and fail to connect once that service has gone."""
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    yield
    os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture(autouse=True)
def no_leftover_hydra_config():
    """A test that makes a HydraConfig current (a sweep job, a launcher check) must not leak it into the next
    test: train() would read that job's launcher and run folder."""
    yield
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every test starts on one intra-op thread, whatever count the test before it set."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def train_cfg(tmp_path: Path) -> DictConfig:
    return compose_config("train", FAST_TRAIN, tmp_path / "run")


def shared_data_or_skip() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (present in CI; see shared/data/README.md)")
    return SHARED_DATA


class FirstBatch(Exception):
    """Stops evaluate() once its first generated batch is in."""


def evaluate_first_batch(monkeypatch, overrides: list[str], tmp_path: Path) -> tuple[Any, list[dict]]:
    """evaluate.py's run with `overrides` stopped at its first generated batch: (that batch, the conditions the U-Net
    was given for it). A huge n= shows here whether generation streams or first builds something n long."""
    from difflab.evaluation import scoring
    from difflab.models import UNet
    from difflab.run.evaluate import evaluate

    seen: list[dict] = []
    forward = UNet.forward

    def spy(net, x, t, cond=None):
        seen.append({key: value.clone() for key, value in (cond or {}).items()})
        return forward(net, x, t, cond)

    def first_batch(evaluator, batches, *args, **kwargs):
        raise FirstBatch(next(iter(batches)))

    monkeypatch.setattr(UNet, "forward", spy)
    monkeypatch.setattr(scoring, "scored", first_batch)
    try:
        evaluate(compose_config("eval", overrides, tmp_path))
    except FirstBatch as stopped:
        return stopped.args[0], seen
    raise AssertionError("evaluate() ended without generating a batch")


def run_cli(
    script: str, *args: str, env: dict[str, str | None] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run an entry point (train.py, sample.py, evaluate.py) from the project root as a user would, on one
    thread, W&B offline; stdout and stderr captured as text. A variable that `env` sets to None is unset."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env={key: value for key, value in full_env.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def every_error(result: subprocess.CompletedProcess, tail: int = 3000) -> str:
    """What a failed multi-process run printed, for an assertion message: the last line of each traceback and each
    crash in its stderr (every rank's, in the order printed: the first is usually the cause), then its end. The end
    alone holds only the last rank's error, often a collective that failed because another rank had died."""
    lines = result.stderr.splitlines()
    errors = []
    for i, line in enumerate(lines):
        if line.startswith(("Fatal Python error", "terminate called")):  # a crash: faulthandler's, C++'s
            errors.append(line)
        elif line.startswith("Traceback"):
            ending = next(
                (later for later in lines[i + 1 :] if later and not later.startswith((" ", "Traceback"))), ""
            )
            errors.append(ending)
    head = "\n".join(f"error {n}: {text}" for n, text in enumerate(errors, start=1))
    return f"{head}\n...\n{result.stderr[-tail:]}"


# An entry point under torchrun, 2 processes on this machine (gloo between CPU processes).
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run_torchrun(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """run_cli for an entry point started by torchrun as 2 processes; no stdin, output captured as text."""
    return subprocess.run(
        [*TORCHRUN, script, *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rank_pid(launcher: int, rank: int) -> int:
    """The pid of the worker torchrun (`launcher`) started as `rank`, read from its environment."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for pid in children:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environment:
            return int(pid)
    raise AssertionError(f"torchrun {launcher} has no worker of rank {rank} among {children}")


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its path in it (to compare two runs' outputs byte for byte)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def few_snapshots(record: logging.LogRecord) -> bool:
    """The warning of a post-hoc EMA rebuild from fewer than 10 snapshots, as tiny test runs' rebuilds are."""
    return "is rebuilt from" in record.getMessage() and " snapshot(s): fewer than" in record.getMessage()


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `error: …` line of a refused command (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.ckpt of a two-step run of the toy model, trained once per test session and shared (read-only)."""
    from difflab.run.train import train

    run = tmp_path_factory.mktemp("tiny") / "run"
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2"], run))
    return run / "checkpoints" / "last.ckpt"


def overwritten_in_its_middle(ckpt: Path, copy: Path) -> Path:
    """A copy of `ckpt` with 4000 bytes in its middle overwritten (a bad disk, a copy gone wrong): the zip is
    whole, its CRC-32s no longer match."""
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = b"\x7f" * 4000
    copy.write_bytes(bytes(data))
    return copy


def with_other_weights(ckpt: Path, copy: Path) -> Path:
    """`ckpt` with noise added to its weights, saved to `copy`: a model of the same data and schedule that
    predicts otherwise, e.g. a guide (a two-step model's zero-initialised output layer would make a merely scaled
    copy predict the same)."""
    state = torch.load(ckpt, weights_only=True)
    g = torch.Generator().manual_seed(0)
    for key in ("state_dict", "current_model_state"):
        for name, value in (state.get(key) or {}).items():
            if value.is_floating_point():
                state[key][name] = value + 0.1 * torch.randn(value.shape, generator=g, dtype=value.dtype)
    torch.save(state, copy)
    return copy


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step run made by train.py, with .hydra/ and a train.log like a user's run folder; shared
    (read-only: copy it to write)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli("train.py", *CLI_FAST, "trainer.max_steps=2", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.fixture(scope="session")
def autoencoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-step run of the toy autoencoder (TINY_AE) on the digits, trained once per test session and shared
    (read-only): the autoencoder tests check what it learnt, the latent diffusion tests diffuse in its latents."""
    from difflab.run.train import train

    run = tmp_path_factory.mktemp("ae") / "run"
    train(compose_config("train", [*TINY_AE, "trainer.max_steps=60", "trainer.val_check_interval=60"], run))
    return run


@pytest.fixture
def tiny_run(tiny_ckpt: Path, tmp_path: Path) -> Path:
    """A copy of tiny_ckpt's run folder that a test may write into (a report, a resume)."""
    run = tmp_path / "tiny_run"
    shutil.copytree(tiny_ckpt.parent.parent, run)
    return run


@pytest.fixture
def small_disk(tmp_path: Path):
    """A function mounting a tmpfs of the given size (e.g. "7m") at a fresh folder: a disk that fills up for
    real. Needs root (as on the project's machines and CI); skipped with the reason elsewhere."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
