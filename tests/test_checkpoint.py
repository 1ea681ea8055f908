"""A checkpoint is written whole or not at all (a temp file beside the target, fsync, os.replace) and read as
data, never code: a pickle that runs code and a config naming a foreign `_target_` are refused by every entry
point, in one line, with no side effect and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import FAST_TRAIN, compose_config, one_error_line, run_cli
from lightning.pytorch.plugins.environments import LightningEnvironment
from torch import nn

from difflab.checkpoint import CONFIG_KEY, load_model, read_checkpoint
from difflab.run.train import build_trainer, train
from difflab.training import AtomicCheckpointIO, DiffusionModule, NonFiniteError


class RunsCode:
    """Unpickling this calls os.mkdir(marker): the side effect a hostile checkpoint would have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class TinyNet(nn.Module):
    """A user's own denoiser class, importable as test_checkpoint.TinyNet."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def variant(tiny_ckpt: Path, path: Path, edit) -> Path:
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture
def pickle_bomb(tiny_ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = variant(tiny_ckpt, tmp_path / "bomb.ckpt", lambda c: c.update(payload=RunsCode(marker)))
    return path, marker


@pytest.fixture
def hostile_target(tiny_ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Plain data only, but its model config would truncate `victim` if instantiated."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")

    def edit(ckpt: dict) -> None:
        ckpt[CONFIG_KEY]["model"] = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}

    return variant(tiny_ckpt, tmp_path / "hostile.ckpt", edit), victim


def entry_points(ckpt: Path, tmp_path: Path) -> dict[str, list[str]]:
    """Each entry point asked to read `ckpt`, and where it would write."""
    return {
        "sample.py": ["sample.py", f"ckpt={ckpt}", "n=2", f"out={tmp_path / 'samples'}"],
        "evaluate.py": ["evaluate.py", f"ckpt={ckpt}", "n=2", f"out={tmp_path / 'report.json'}"],
        "train.py": ["train.py", *FAST_TRAIN, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}"],
    }


@pytest.mark.parametrize("script", ["sample.py", "evaluate.py", "train.py"])
def test_a_pickle_that_runs_code_is_refused_and_never_run(pickle_bomb, tmp_path, script):
    path, marker = pickle_bomb
    script_file, *args = entry_points(path, tmp_path)[script]
    line = one_error_line(run_cli(script_file, *args))
    assert line.startswith(f"error: refused checkpoint {path}: it holds Python objects"), line
    assert "posix.mkdir" in line or "mkdir" in line
    assert not marker.exists()
    assert not (tmp_path / "samples").exists() and not (tmp_path / "report.json").exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", ["sample.py", "evaluate.py", "train.py"])
def test_a_foreign_target_in_the_stored_config_is_refused(hostile_target, tmp_path, script):
    path, victim = hostile_target
    script_file, *args = entry_points(path, tmp_path)[script]
    line = one_error_line(run_cli(script_file, *args))
    assert "model._target_=builtins.open is not a difflab model" in line, line
    assert victim.read_text() == "precious"
    assert not (tmp_path / "samples").exists() and not (tmp_path / "report.json").exists()
    assert not (tmp_path / "run").exists()


def test_python_readers_refuse_both(pickle_bomb, hostile_target):
    bomb, marker = pickle_bomb
    with pytest.raises(ValueError, match="refused checkpoint"):
        read_checkpoint(bomb)
    assert not marker.exists()
    hostile, victim = hostile_target
    with pytest.raises(ValueError, match="builtins.open"):
        load_model(hostile)
    assert victim.read_text() == "precious"


def test_a_users_own_model_class_loads_once_allowed_explicitly(tiny_ckpt, tmp_path):
    net = TinyNet()

    def edit(ckpt: dict) -> None:
        ckpt[CONFIG_KEY]["model"] = {"_target_": "test_checkpoint.TinyNet", "channels": 1}
        ckpt["state_dict"] = {f"net.{k}": v for k, v in net.state_dict().items()}

    path = variant(tiny_ckpt, tmp_path / "custom.ckpt", edit)
    with pytest.raises(ValueError, match=r"allowed_targets=\[test_checkpoint.TinyNet\]"):
        load_model(path)
    loaded = load_model(path, allowed_targets=["test_checkpoint.TinyNet"])
    assert isinstance(loaded.net, TinyNet)
    assert torch.equal(loaded.net.conv.weight, net.conv.weight)


def test_a_checkpoint_that_does_not_fit_its_model_names_the_keys(tiny_ckpt, tmp_path):
    def edit(ckpt: dict) -> None:
        state = ckpt["state_dict"]
        name = next(k for k in state if k.startswith("net.") and k.endswith("weight"))
        state["net.extra.weight"] = state.pop(name)

    path = variant(tiny_ckpt, tmp_path / "renamed.ckpt", edit)
    with pytest.raises(ValueError, match=r"1 missing: .*; 1 unexpected: extra.weight"):
        load_model(path)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [("base_channels", "16", "is not a whole number"), ("dropout", "${oc.env:HOME}", "is not a number")],
)
def test_a_stored_value_of_the_wrong_kind_is_named_with_its_key(tiny_ckpt, tmp_path, key, value, problem):
    # Before: "'<' not supported between instances of 'int' and 'str'" from sample.py, evaluate.py and export.py,
    # a Hydra InstantiationException traceback from difflab.load (helper report).
    path = variant(
        tiny_ckpt, tmp_path / "typed.ckpt", lambda ckpt: ckpt[CONFIG_KEY]["model"].update({key: value})
    )
    with pytest.raises(ValueError) as raised:
        load_model(path)
    assert (
        str(raised.value) == f"checkpoint {path}: its model cannot be built: model.{key}={value!r} {problem}"
    )
    result = run_cli("sample.py", f"ckpt={path}", "n=2", f"out={tmp_path / 'out'}")
    assert one_error_line(result) == f"error: {raised.value}"
    assert not (tmp_path / "out").exists()


def test_a_resume_names_a_stored_value_of_the_wrong_kind_with_its_key(tiny_run):
    # Before: "the config contradicts checkpoint …: model.base_channels=16 (checkpoint: 16)", two values alike.
    last = tiny_run / "checkpoints" / "last.ckpt"
    variant(last, last, lambda ckpt: ckpt[CONFIG_KEY]["model"].update(base_channels="16"))
    before = last.read_bytes()
    result = run_cli("train.py", *FAST_TRAIN, f"hydra.run.dir={tiny_run}", "ckpt_path=last")
    assert one_error_line(result) == (
        f"error: checkpoint {last}: its model cannot be built: model.base_channels='16' is not a whole number"
    )
    assert last.read_bytes() == before


def test_every_checkpoint_difflab_writes_opens_weights_only(tiny_ckpt):
    for path in tiny_ckpt.parent.glob("*.ckpt"):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert "current_model_state" in ckpt and CONFIG_KEY in ckpt


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


def test_a_run_shorter_than_the_checkpoint_period_leaves_one_last_ckpt(tmp_path):
    """Only last.ckpt is written when no periodic save falls in the run; Lightning's own end-of-training save of
    last must not add a last-v1.ckpt (a second copy of the weights, written after the final grid)."""
    overrides = [*FAST_TRAIN, "trainer.max_steps=3", "callbacks.model_checkpoint.every_n_train_steps=1000"]
    train(compose_config("train", overrides, tmp_path / "run"))
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 3


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


def test_a_resume_removes_the_temp_files_killed_writes_left(tiny_run, caplog):
    run = tiny_run
    folder = run / "checkpoints"
    orphans = [folder / ".last.ckpt.0123456789ab.tmp", folder / ".step_0000002.ckpt.ba9876543210.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"PK\x03\x04 half a checkpoint from a kill -9")
    (folder / "notes.tmp").write_text("not ours")
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=4", "ckpt_path=last"], run))
    assert not any(orphan.exists() for orphan in orphans)
    assert (folder / "notes.tmp").exists()
    assert f"removed {orphans[0]}, left by a checkpoint write that was killed mid-way" in caplog.text


def test_a_checkpoint_from_before_prediction_types_is_read_as_the_epsilon_model_it_is(tiny_ckpt, tmp_path):
    """A key an old checkpoint's config lacks is filled in once, by the reader, with the value the code of the
    time used: sample.py then names an override that contradicts it instead of silently ignoring it."""
    from conftest import compose_config

    from difflab.run.sample import sample

    ckpt = torch.load(tiny_ckpt, weights_only=True)
    del ckpt[CONFIG_KEY]["prediction_type"]  # written before x0 and v prediction existed
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    assert load_model(old).config["prediction_type"] == "epsilon"
    cfg = compose_config(
        "sample", [f"ckpt={old}", "n=2", "prediction_type=v", f"out={tmp_path / 'out'}"], tmp_path
    )
    with pytest.raises(ValueError, match=r"prediction_type=v \(checkpoint: epsilon\)"):
        sample(cfg)
    assert not (tmp_path / "out").exists()
