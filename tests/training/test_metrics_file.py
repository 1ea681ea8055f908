"""<run>/metrics.jsonl: one JSON line per log call on rank 0, kept whole across kills and resumes; a rewound
resume sets the abandoned continuation's lines aside, so the file holds the run's one history."""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, compose_config
from lightning.pytorch.utilities import rank_zero_only

from difflab.io.atomic import NoSpaceLeft
from difflab.run.train import train
from difflab.runlogs import METRICS_FILE, read_rows, run_series
from difflab.training.metrics_file import MetricsFile

# The log every step, checkpoints every 2 steps, no sample grids.
QUICK = [
    *FAST_TRAIN,
    "logger=none",
    "callbacks.sample_grid=null",
    "callbacks.model_checkpoint.every_n_train_steps=2",
]


def train_to(run_dir: Path, max_steps: int, *extra: str) -> None:
    train(compose_config("train", [*QUICK, f"trainer.max_steps={max_steps}", *extra], run_dir))


def test_lines_are_plain_json_and_a_line_cut_short_by_a_kill_is_skipped(tmp_path: Path, caplog) -> None:
    (tmp_path / METRICS_FILE).write_text('{"step": 0, "train/loss": 0.5}\n{"step": 1, "train/lo')
    MetricsFile(tmp_path).log_metrics({"train/loss": float("nan"), "val/loss": 0.25, "epoch": 0}, step=2)
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert json.loads(lines[-1]) == {
        "step": 2,
        "train/loss": None,
        "val/loss": 0.25,
        "epoch": 0,
    }  # strict JSON
    with caplog.at_level(logging.WARNING, logger="difflab"):
        rows = read_rows(tmp_path / METRICS_FILE)
    assert [row["step"] for row in rows] == [0, 2]
    assert f"skipping line 2 of {tmp_path / METRICS_FILE}" in caplog.text
    assert run_series(tmp_path) == {"train/loss": [(0, 0.5)], "val/loss": [(2, 0.25)]}  # NaN left out


def test_a_line_of_bytes_that_are_no_text_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    # Before, compare (and a resume, which reads the file too) stopped with "'utf-8' codec can't decode byte 0xff
    # in position 33", naming no file.
    (tmp_path / METRICS_FILE).write_bytes(
        b'{"step": 0, "train/loss": 0.5}\n\xff\xfe\n{"step": 1, "train/loss": 0.25}\n'
    )
    with caplog.at_level(logging.WARNING, logger="difflab"):
        assert run_series(tmp_path) == {"train/loss": [(0, 0.5), (1, 0.25)]}
    assert f"skipping line 2 of {tmp_path / METRICS_FILE}: not a JSON object" in caplog.text


def test_a_line_that_does_not_fit_on_the_disk_is_not_left_half_written(small_disk) -> None:
    # Before, the part that fitted stayed (half a JSON line) and the error named the run folder, not the file.
    disk = small_disk("64k")
    logger = MetricsFile(disk)
    logger.log_metrics({"train/loss": 0.5}, step=0)
    with contextlib.suppress(OSError), (disk / "filler").open("wb", buffering=0) as filler:
        while True:
            filler.write(b"\0" * 4096)
    wide = {
        f"val/score_{i}": 0.125 for i in range(400)
    }  # ~10 KB: more than the room left in the file's block
    with pytest.raises(NoSpaceLeft, match=f"^no space left on device writing {disk / METRICS_FILE}; "):
        logger.log_metrics(wide, step=1)
    assert (disk / METRICS_FILE).read_text() == '{"step": 0, "train/loss": 0.5}\n'
    (disk / "filler").unlink()
    logger.log_metrics(wide, step=1)
    assert [row["step"] for row in read_rows(disk / METRICS_FILE)] == [0, 1]


def test_only_rank_zero_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    MetricsFile(tmp_path).log_metrics({"train/loss": 0.5}, step=0)
    assert not (tmp_path / METRICS_FILE).exists()


def test_a_resumed_run_continues_the_file_as_one_uninterrupted_run_would_write_it(tmp_path: Path) -> None:
    train_to(tmp_path / "whole", 4)
    train_to(tmp_path / "split", 2)
    train_to(tmp_path / "split", 4, "ckpt_path=last")
    assert run_series(tmp_path / "split") == run_series(tmp_path / "whole")
    assert [step for step, _ in run_series(tmp_path / "whole")["train/loss"]] == [0, 1, 2, 3]


def test_a_validation_is_logged_at_the_step_of_the_weights_it_scored(tmp_path: Path) -> None:
    # Before, at Lightning's 0-based index of the step it follows: val/loss at 1 and 3 beside checkpoints (and FID
    # scores) at 2 and 4, one step apart in W&B and in difflab.compare.
    train_to(tmp_path, 4)
    checkpoints = sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "checkpoints").glob("step_*.ckpt"))
    assert checkpoints == [2, 4]
    assert [step for step, _ in run_series(tmp_path)["val/loss"]] == checkpoints
    validations = [row for row in read_rows(tmp_path / METRICS_FILE) if "val/loss" in row]
    assert [row["epoch"] for row in validations] == [0, 0]  # as Lightning's own rows carry it


def test_a_resume_at_the_step_limit_replaces_the_final_scores_it_makes_again(tmp_path: Path) -> None:
    # Before, every resume of a finished run appended another copy of its final FID line.
    (tmp_path / METRICS_FILE).write_text(
        '{"step": 3, "train/loss": 0.5}\n{"step": 4, "val/fd_effl0": 222.5}\n{"step": 4, "val/loss": 0.4}\n'
    )
    MetricsFile(tmp_path, resumed_at=4, final_again=True).log_metrics({"val/fd_effl0": 222.5}, step=4)
    rows = read_rows(tmp_path / METRICS_FILE)
    assert rows == [
        {"step": 3, "train/loss": 0.5},
        {"step": 4, "val/loss": 0.4},  # the validation is not made again: its line stays
        {"step": 4, "val/fd_effl0": 222.5},
    ]
    assert read_rows(tmp_path / "metrics.superseded_at_step_0000004.jsonl") == [
        {"step": 4, "val/fd_effl0": 222.5}
    ]


def test_rewinding_to_an_earlier_checkpoint_sets_the_abandoned_lines_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_to(run, 4)
    first = read_rows(run / METRICS_FILE)
    train_to(run, 3, f"ckpt_path={run / 'checkpoints' / 'step_0000002.ckpt'}")
    aside = run / "metrics.superseded_at_step_0000002.jsonl"
    # kept, not lost: the later lines and the train/ line of step 2 (the first step after the checkpoint)
    abandoned = [row for row in first if row["step"] > 2 or (row["step"] == 2 and "train/loss" in row)]
    assert read_rows(aside) == abandoned
    # Before, the resumed step 2 was logged beside the abandoned one: two train/loss lines at step 2.
    logged = Counter(
        (row["step"], key) for row in read_rows(run / METRICS_FILE) for key in row if key != "step"
    )
    assert [entry for entry, times in logged.items() if times > 1 and entry[1] != "epoch"] == []
    series = run_series(run)
    assert [step for step, _ in series["train/loss"]] == [0, 1, 2]  # not the abandoned step 3
    assert [step for step, _ in series["val/loss"]] == [2]  # nor its second validation (at 4)
    whole = {row["step"]: row["train/loss"] for row in first if "train/loss" in row}
    assert series["train/loss"] == [(step, whole[step]) for step in (0, 1, 2)]


def test_a_requeued_job_that_starts_over_sets_its_first_attempts_lines_aside(tmp_path, monkeypatch) -> None:
    """A job killed before its first checkpoint starts over from step 0 in its folder when requeued. Before, its
    metrics.jsonl kept the first attempt's lines ahead of the second's: every step logged twice."""
    run = tmp_path / "run"
    train_to(run, 3, "callbacks.model_checkpoint=null", "logger=csv")
    first = read_rows(run / METRICS_FILE)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # a job its launcher started again
    train_to(run, 3, "callbacks.model_checkpoint=null", "logger=csv")
    logged = Counter((row["step"], key) for row in read_rows(run / METRICS_FILE) for key in row)
    assert [entry for entry, times in logged.items() if times > 1 and entry[1] not in ("step", "epoch")] == []
    assert read_rows(run / "metrics.superseded_at_step_0000000.jsonl") == first
    # The CSV logger's first metrics.csv is kept too (Lightning deletes the one it finds in its folder).
    assert len(list((run / "csv").rglob("metrics.csv"))) == 2
