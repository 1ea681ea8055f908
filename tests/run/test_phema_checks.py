"""train.py with callbacks.phema refused in one line before the run folder is made: without the checkpoints a
rebuild reads."""

from __future__ import annotations

from pathlib import Path

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
