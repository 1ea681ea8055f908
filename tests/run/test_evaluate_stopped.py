"""evaluate.py stopped while it generates (a cluster's SIGTERM, Ctrl-C): one line that says nothing was written and
how to score a long set that survives a stop, the exit code a shell expects, no report."""

from __future__ import annotations

import os
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
    cache, report = tmp_path / "cache", tmp_path / "report.json"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            f"ckpt={tiny_ckpt}",
            "n=5000",  # long enough to be stopped while it generates
            "sampler.steps=200",
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
    time.sleep(0.5)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + stop, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert lines == [
        f"error: evaluate.py {how}; nothing was written (run it again to start over; a long set survives a "
        "stop when sample.py makes it, out=…, and evaluate.py scores it, images=…)"
    ], stderr[-3000:]
    assert not report.exists()
