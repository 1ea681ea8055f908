"""W&B runs offline unless W&B itself finds a login: its own check (WANDB_API_KEY, its settings file, ~/.netrc for
the host it talks to, an identity token), not a reading of ~/.netrc by hand; a malformed key is one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wandb
from conftest import FAST_TRAIN, one_error_line, run_cli

from difflab.tracking.wandb_logger import default_wandb_offline

KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters: the shape of a W&B API key
# A W&B server that refuses at once: a configured login makes wandb look its user up (for its "logged in as"
# line), which must not wait on the network here.
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A home folder of its own, no W&B variable but WANDB_SILENT, and W&B's process state (its settings and
    session credentials) torn down before and after, as in a fresh process."""
    folder = tmp_path / "home"
    folder.mkdir()
    for name in [k for k in os.environ if k.startswith("WANDB_")] + ["NETRC"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "WANDB_MODE", "unset"
    )  # recorded, so that the mode chosen below does not outlive the test
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(folder))
    wandb.teardown()
    yield folder
    wandb.teardown()


def test_no_login_runs_offline(home: Path) -> None:
    assert default_wandb_offline() == "offline"


def test_with_no_login_a_run_starts_offline_instead_of_asking_for_a_key(home: Path) -> None:
    # make train's path: the login check, then the logger's wandb.init (it failed with "No API key configured"
    # when the check's W&B settings, taken before WANDB_MODE=offline was set, outlived it).
    default_wandb_offline()
    run = wandb.init(project="difflab-test", dir=str(home))
    try:
        assert run.settings.mode == "offline"
    finally:
        run.finish()


def test_a_netrc_entry_for_another_host_is_not_a_login(home: Path) -> None:
    # Named "wandb" but not the host W&B talks to: W&B would not use it, so the run stays offline.
    (home / ".netrc").write_text(f"machine wandb.example.org\n  login user\n  password {KEY}\n")
    (home / ".netrc").chmod(0o600)
    assert default_wandb_offline() == "offline"


def test_a_key_in_wandbs_own_settings_is_a_login(home: Path) -> None:
    settings = home / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text(f"[default]\nbase_url = {UNREACHABLE}\napi_key = {KEY}\n")
    assert default_wandb_offline() == "online"


def test_a_malformed_api_key_is_one_clear_error_and_the_run_leaves_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    unset = {name: None for name in os.environ if name.startswith("WANDB_")}  # no login, no mode
    result = run_cli(
        "train.py", *FAST_TRAIN, "logger=wandb", f"hydra.run.dir={run}",
        env={**unset, "WANDB_API_KEY": "short", "WANDB_SILENT": "true"},
    )  # fmt: skip
    line = one_error_line(result)
    assert line.startswith("error: W&B login: WANDB_API_KEY invalid: API key must have 40+ characters"), line
    assert not run.exists()
