"""A checkpoint is data, never code: a pickle that runs code and a config naming a foreign `_target_` are
refused by every entry point, in one line, with no side effect and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, one_error_line, run_cli
from torch import nn

from difflab.checkpoint import CONFIG_KEY, load_model, read_checkpoint


class RunsCode:
    """Unpickling this calls os.mkdir(marker): the side effect a hostile checkpoint would have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class TinyNet(nn.Module):
    """A user's own denoiser class, importable as test_checkpoint_safety.TinyNet."""

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
        ckpt[CONFIG_KEY]["model"] = {"_target_": "test_checkpoint_safety.TinyNet", "channels": 1}
        ckpt["state_dict"] = {f"net.{k}": v for k, v in net.state_dict().items()}

    path = variant(tiny_ckpt, tmp_path / "custom.ckpt", edit)
    with pytest.raises(ValueError, match=r"allowed_targets=\[test_checkpoint_safety.TinyNet\]"):
        load_model(path)
    loaded = load_model(path, allowed_targets=["test_checkpoint_safety.TinyNet"])
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


def test_every_checkpoint_difflab_writes_opens_weights_only(tiny_ckpt):
    for path in tiny_ckpt.parent.glob("*.ckpt"):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert "current_model_state" in ckpt and CONFIG_KEY in ckpt


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
