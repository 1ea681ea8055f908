"""W&B runs offline unless W&B itself finds a login: its own check (WANDB_API_KEY, its settings file, ~/.netrc for
the host it talks to, an identity token), not a reading of ~/.netrc by hand; a malformed key is one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wandb
from conftest import FAST_TRAIN, one_error_line, run_cli

from difflab.tracking.wandb_logger import default_wandb_offline, wandb_start_refusals_named

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


def test_a_refused_start_with_the_mode_unset_says_a_login_made_it_online(home: Path) -> None:
    # Before: "(WANDB_MODE=online)", a setting the user never typed: online came from the login W&B found.
    with pytest.raises(ValueError) as raised, wandb_start_refusals_named():
        raise wandb.errors.CommError("Failed to get resume status for run x: context deadline exceeded")
    assert str(raised.value).startswith(
        "W&B could not start its run (online: a login is found): Failed to get resume status for run x: context "
        "deadline exceeded; check the W&B login"
    )


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


def test_a_mistyped_wandb_mode_is_one_line_naming_the_modes_and_the_run_leaves_nothing(
    tmp_path: Path,
) -> None:
    # Helper report: before, "error: 1 validation error for Settings", the line naming mode and its values cut.
    run = tmp_path / "run"
    result = run_cli(
        "train.py", *FAST_TRAIN, "logger=wandb", f"hydra.run.dir={run}", env={"WANDB_MODE": "ofline"}
    )
    assert one_error_line(result) == (
        "error: WANDB_MODE=ofline is not a W&B mode: give one of online, offline, shared, disabled, dryrun, run "
        "(offline writes the run to disk for a later `wandb sync`)"
    )
    assert not run.exists()


def test_online_mode_without_a_login_is_one_line_and_the_run_leaves_nothing(tmp_path: Path) -> None:
    """Before: wandb's 'UsageError: No API key configured' in a traceback, and a run folder left holding .hydra/,
    train.log and wandb_run_id, which refused the same command as "a run that wrote no checkpoint"."""
    run = tmp_path / "run"
    unset = {name: None for name in os.environ if name.startswith("WANDB_")}
    env = {**unset, "WANDB_MODE": "online", "WANDB_SILENT": "true", "HOME": str(tmp_path), "NETRC": None}
    result = run_cli("train.py", *FAST_TRAIN, "logger=wandb", f"hydra.run.dir={run}", env=env)
    assert one_error_line(result) == (
        "error: W&B could not start its run (WANDB_MODE=online): No API key configured. Use `wandb login` to log "
        "in; check the W&B login, network and logger.wandb settings, or log offline with WANDB_MODE=offline "
        "(`wandb sync <run>/wandb` later), or use logger=csv"
    )
    assert not run.exists()


def test_an_id_w_and_b_would_refuse_is_one_line_and_the_run_leaves_nothing(tmp_path: Path) -> None:
    """Before: wandb's 'UsageError: Run ID cannot contain the characters' in a traceback, and a run folder left
    holding .hydra/, train.log and a wandb_run_id file with the bad id."""
    run = tmp_path / "run"
    line = one_error_line(
        run_cli("train.py", *FAST_TRAIN, "logger=wandb", "logger.wandb.id=a/b", f"hydra.run.dir={run}")
    )
    assert line == "error: logger.wandb.id=a/b is not a W&B run id: give 1 to 128 of A-Z a-z 0-9 _ -"
    assert not run.exists()


def test_a_sweep_with_one_id_for_every_job_is_one_line_before_any_job(tmp_path: Path) -> None:
    """Before, both jobs logged into run 'shared', merging two experiments' curves and configs without a word."""
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST_TRAIN, "optim.lr=1e-3,2e-3", "logger=wandb", "logger.wandb.id=shared"]
    line = one_error_line(run_cli("train.py", *args, f"hydra.sweep.dir={sweep}"))
    assert line.startswith(
        "error: logger.wandb.id=shared in a sweep would log every job into that one W&B run"
    )
    assert not sweep.exists() or not any(sweep.iterdir())


def test_the_readmes_logger_wandb_id_sets_the_run_id(tmp_path: Path) -> None:
    """README 'Resuming': `logger.wandb.id=<id>` sets it; before, it was refused as no key of the config."""
    from conftest import compose_config

    from difflab.run.train import train
    from difflab.tracking.run_ids import ID_FILE
    from difflab.tracking.wandb_logger import finish_wandb_run

    run = tmp_path / "run"
    train(
        compose_config(
            "train", [*FAST_TRAIN, "logger=wandb", "logger.wandb.id=my-run_1", "trainer.max_steps=1"], run
        )
    )
    finish_wandb_run()
    assert (run / ID_FILE).read_text().strip() == "my-run_1"
    assert [p.name for p in (run / "wandb").glob("offline-run-*")][0].endswith("-my-run_1")
