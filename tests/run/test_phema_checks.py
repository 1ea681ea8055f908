"""train.py with callbacks.phema refused in one line before the run folder is made: without the checkpoints a
rebuild reads, or with snapshot settings that are not numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CLI_FAST, one_error_line, run_cli

# CLI_FAST without its settings of the default callbacks, which callbacks=phema alone does not have.
NO_CALLBACK_KEYS = [o for o in CLI_FAST if not o.startswith("callbacks.")]


def test_phema_alone_is_refused_before_the_run_folder_is_made(tmp_path: Path) -> None:
    # Before, it trained with no EMA and no checkpoints/last.ckpt, and python -m difflab.phema then failed.
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *NO_CALLBACK_KEYS, "callbacks=phema", f"hydra.run.dir={run}"))
    assert line == (
        "error: callbacks.phema without the default callbacks keeps no checkpoints/last.ckpt, which python -m "
        "difflab.phema rebuilds from: add callbacks=[default,phema]"
    )
    assert not run.exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        # Before, "could not convert string to float: 'abc'" and "invalid literal for int() …", naming no key.
        (
            "callbacks.phema.sigma_rels=[0.05,abc]",
            "error: callbacks.phema.sigma_rels=[0.05, 'abc'] is not a list of numbers, e.g. [0.05,0.10]",
        ),
        (
            "callbacks.phema.every_n_steps=abc",
            "error: callbacks.phema.every_n_steps='abc' is not a whole number",
        ),
    ],
)
def test_phema_settings_that_are_not_numbers_name_their_key(
    tmp_path: Path, setting: str, message: str
) -> None:
    run = tmp_path / "run"
    line = one_error_line(
        run_cli("train.py", *CLI_FAST, "callbacks=[default,phema]", setting, f"hydra.run.dir={run}")
    )
    assert line == message
    assert not run.exists()
