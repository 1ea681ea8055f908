"""evaluate.py stopped while it generates (a cluster's SIGTERM, Ctrl-C): one line that says what was kept of it, the
exit code a shell expects, no report. (What a stop keeps is continued in test_evaluate_continued.py.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LITE_EVAL, ROOT


@pytest.mark.parametrize(
    ("stop", "how"), [(signal.SIGTERM, "stopped by SIGTERM"), (signal.SIGINT, "interrupted")]
)
def test_a_stopped_evaluate_is_one_line_and_writes_no_report(
    tiny_ckpt: Path, tmp_path: Path, stop, how
) -> None:
    # One batch of 5000, long enough to be stopped while it is made: no image is scored before the stop.
    stderr = stopped(tiny_ckpt, tmp_path, stop, "n=5000", "batch_size=5000", "sampler.steps=200")
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    expected = f"error: evaluate.py {how}; nothing was written (no image had been scored yet)"
    assert lines == [expected], stderr[-3000:]
    assert not (tmp_path / "report.json").exists()


def test_a_stop_once_images_are_scored_says_where_they_are_kept(tiny_ckpt: Path, tmp_path: Path) -> None:
    stderr = stopped(
        tiny_ckpt, tmp_path, signal.SIGTERM, "n=5000", "batch_size=1", "sampler.steps=2", wait=2.0
    )
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    kept = re.escape(str(tmp_path / "cache" / "unfinished")) + r"/evaluate_[0-9a-f]{16}\.pt"
    said = (
        r"\d+ of its 5000 images were scored and kept in " + kept + ": the same command continues from there"
    )
    assert len(lines) == 1 and re.fullmatch(r"error: evaluate\.py stopped by SIGTERM; " + said, lines[0]), (
        lines
    )
    assert not (tmp_path / "report.json").exists()


def stopped(tiny_ckpt: Path, tmp_path: Path, stop: int, *overrides: str, wait: float = 0.5) -> str:
    """evaluate.py's stderr once `stop` was sent `wait` s after it started generating; checks its exit code."""
    cache, report = tmp_path / "cache", tmp_path / "report.json"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            f"ckpt={tiny_ckpt}",
            *overrides,
            "cpu_threads=1",
            *LITE_EVAL,
            f"metrics.cache_dir={cache}",
            f"out={report}",
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal starts it
    )
    deadline = time.monotonic() + 120
    while not any(cache.rglob("*.npz")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)  # the reference statistics are written just before generation starts
    assert process.poll() is None, "evaluate.py ended before it could be stopped"
    time.sleep(wait)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + stop, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr
