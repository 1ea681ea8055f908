"""Checkpoints are written whole or not at all: a temp file beside the target, fsync, os.replace."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import FAST_TRAIN, compose_config
from lightning.pytorch.plugins.environments import LightningEnvironment

from difflab.run.train import build_trainer, train
from difflab.training import AtomicCheckpointIO, DiffusionModule, NonFiniteError


def checkpoint(value: float = 1.0, step: int = 4) -> dict:
    return {"state_dict": {"net.w": torch.full((3,), value)}, "global_step": step}


def test_a_training_run_writes_whole_checkpoints_through_temp_files_in_their_own_folder(
    tmp_path, monkeypatch
):
    elsewhere = tmp_path / "tmpdir"  # stands for a $TMPDIR on another filesystem
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile caches the default folder
    renamed: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renamed.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    train(compose_config("train", FAST_TRAIN, tmp_path / "run"))

    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 4
    written = {dst.name for src, dst in renamed if dst.suffix == ".ckpt"}
    assert written == {"last.ckpt", "step_0000002.ckpt", "step_0000004.ckpt"}
    assert all(src.parent == dst.parent == folder for src, dst in renamed if dst.suffix == ".ckpt")
    assert not list(elsewhere.iterdir())
    umask = os.umask(0o022)
    os.umask(umask)
    assert (folder / "last.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask, "permissions as for any new file"


def write_partly_then_fail(obj: object, file: object) -> None:
    file.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("No space left on device")


def fail_to_rename(src: object, dst: object) -> None:
    raise OSError("No space left on device")


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, where):
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(checkpoint(1.0), target)
    before = target.read_bytes()

    if where == "torch.save":
        monkeypatch.setattr(torch, "save", write_partly_then_fail)
    else:
        monkeypatch.setattr(os, "replace", fail_to_rename)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint(checkpoint(2.0, step=6), target)

    assert target.read_bytes() == before
    assert torch.load(target, weights_only=True)["global_step"] == 4
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_non_finite_weights_are_refused_before_a_checkpoint_is_written():
    with pytest.raises(NonFiniteError, match=r"state_dict\.net\.w is not finite at step 7") as excinfo:
        DiffusionModule.on_save_checkpoint(None, checkpoint(float("nan"), step=7))
    assert "\n" not in str(excinfo.value)
    DiffusionModule.on_save_checkpoint(None, checkpoint(1.0, step=7))  # finite weights pass


class TheirEnvironment(LightningEnvironment):
    """A plugin a user might configure in trainer.plugins."""


def test_the_trainer_uses_it_alongside_plugins_the_user_configured(tmp_path):
    def trainer(*overrides: str) -> L.Trainer:
        return build_trainer(compose_config("train", [*FAST_TRAIN, *overrides], tmp_path), [], [])

    assert isinstance(trainer().strategy.checkpoint_io, AtomicCheckpointIO)
    with_theirs = trainer(f"+trainer.plugins=[{{_target_:{__name__}.TheirEnvironment}}]")
    assert isinstance(with_theirs._accelerator_connector.cluster_environment, TheirEnvironment)
    assert isinstance(with_theirs.strategy.checkpoint_io, AtomicCheckpointIO)
    # A CheckpointIO of the user's own replaces ours (Lightning accepts only one).
    their_io = trainer("+trainer.plugins=[{_target_:lightning.pytorch.plugins.TorchCheckpointIO}]")
    assert type(their_io.strategy.checkpoint_io).__name__ == "TorchCheckpointIO"


def test_a_resume_removes_the_temp_files_killed_writes_left(tmp_path, caplog):
    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2"], run))
    folder = run / "checkpoints"
    orphans = [folder / ".last.ckpt.0123456789ab.tmp", folder / ".step_0000002.ckpt.ba9876543210.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"PK\x03\x04 half a checkpoint from a kill -9")
    (folder / "notes.tmp").write_text("not ours")
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=4", "ckpt_path=last"], run))
    assert not any(orphan.exists() for orphan in orphans)
    assert (folder / "notes.tmp").exists()
    assert f"removed {orphans[0]}, left by a checkpoint write that was killed mid-way" in caplog.text
