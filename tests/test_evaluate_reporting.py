"""What evaluate.py says beside its scores: a warning when n or the reference set is too small for stable numbers,
and the scores of a run's checkpoint logged into that run's W&B run (its id read from the untrusted run folder)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from conftest import compose_config
from wandb_files import history_rows

from difflab.metrics.sample_size import small_sample_warning
from difflab.run.evaluate import evaluate
from difflab.tracking.run_ids import ID_FILE, choose_run_id, read_run_id

SMALL = [
    "metrics.num_reference=40",
    "metrics.kid_subset_size=10",
    "metrics.kid_subsets=10",
    "sampler.steps=2",
]


@pytest.mark.parametrize("text", ["3xk9q2lm\n", "run_2024-01", "a" * 128])
def test_a_plausible_run_id_is_read(tmp_path: Path, text: str) -> None:
    (tmp_path / ID_FILE).write_text(text)
    assert read_run_id(tmp_path) == text.strip()


@pytest.mark.parametrize(
    "text", ["", "a" * 129, "../../other", "id with spaces", "abc\ndef", "$(rm -rf ~)", "\x00\xff"]
)
def test_an_implausible_run_id_is_ignored_with_a_warning(tmp_path: Path, text: str, caplog) -> None:
    (tmp_path / ID_FILE).write_bytes(text.encode("utf-8", "surrogateescape") if text else b"")
    with caplog.at_level(logging.WARNING, logger="difflab"):
        assert read_run_id(tmp_path) is None
    assert str(tmp_path / ID_FILE) in caplog.text
    # A resume does not adopt it either: it takes the checkpoint's id (or a new one).
    assert choose_run_id(None, tmp_path, {"logger": {"wandb": {"id": "fromckpt"}}}) == "fromckpt"


def test_no_id_file_is_no_run_id_and_no_warning(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="difflab"):
        assert read_run_id(tmp_path) is None
    assert not caplog.text


def test_warning_names_the_sizes_and_what_gives_stable_numbers() -> None:
    line = small_sample_warning(64, 90, "fd_effl0", 1280, prc=True)
    assert "n=64" in line and "90 reference images" in line
    assert "1,280 features" in line  # singular covariances below the feature width
    assert "0.73 at 10,000" in line and "13.8 at 90" in line  # the README's FD-vs-n tables
    assert "precision/recall are inflated" in line and "0.94 at 64" in line
    assert small_sample_warning(10_000, 10_000, "fd_effl0", 1280, prc=True) is None
    # Between the feature width and 10,000, only the Fréchet distance's bias is named.
    mid = small_sample_warning(2_000, 5_000, "fd_effl0", 1280, prc=True)
    assert "fd_effl0" in mid and "features" not in mid and "precision" not in mid
    assert "precision" not in small_sample_warning(64, 90, "fid", 2048, prc=False)


@pytest.fixture
def run_folder(tiny_ckpt: Path, tmp_path: Path) -> Path:
    """A training run's folder as train.py leaves it with W&B on: its checkpoint and its run id."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_ckpt, run / "checkpoints" / "last.ckpt")
    (run / ID_FILE).write_text("evalrun1\n")
    return run


def test_scores_of_a_runs_checkpoint_go_to_its_wandb_run(run_folder: Path, tmp_path: Path, caplog) -> None:
    ckpt = run_folder / "checkpoints" / "last.ckpt"
    overrides = [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", f"ckpt={ckpt}", "n=12"]
    with caplog.at_level(logging.WARNING, logger="difflab"):
        report = evaluate(compose_config("eval", overrides, tmp_path / "unused"))
    assert "n=12 samples against 40 reference images" in caplog.text  # and the numbers are flagged
    (wandb_run,) = (run_folder / "wandb").glob("offline-run-*-evalrun1")
    rows = [row for row in history_rows(wandb_run) if "eval/fd_effl0" in row]
    assert len(rows) == 1
    assert rows[0]["eval/fd_effl0"] == pytest.approx(report["metrics"]["fd_effl0"])
    assert rows[0]["eval/n"] == 12 and rows[0]["trainer/global_step"] == 2


def test_a_hostile_run_id_is_not_used_and_the_report_is_still_written(
    run_folder: Path, tmp_path: Path, caplog
) -> None:
    (run_folder / ID_FILE).write_text("x/../../../elsewhere\n")
    ckpt = run_folder / "checkpoints" / "last.ckpt"
    overrides = [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", f"ckpt={ckpt}", "n=4"]
    with caplog.at_level(logging.WARNING, logger="difflab"):
        evaluate(compose_config("eval", overrides, tmp_path / "unused"))
    assert (run_folder / "metrics.json").is_file()
    assert not (run_folder / "wandb").exists()
    assert "wandb_run_id" in caplog.text
