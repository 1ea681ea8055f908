"""train.py in a subprocess, as the benchmarks that time training run it: the digits in memory, no validation,
progress bar, logger or grids, one torch thread per process, with the calling script's timing callback importable
(benchmarks/ on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What a timed run leaves out, so that the steps and saves being timed are all it does.
QUIET_RUN = [
    "data=digits",
    "+trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "cpu_threads=1",
    "callbacks.sample_grid=null",
]


def run_train(overrides: list[str], src: str, what: str, env: dict[str, str] | None = None) -> None:
    """train.py with QUIET_RUN and `overrides`, the difflab in `src` first on the path; on failure, exit naming
    `what` with the end of its stderr."""
    path = os.pathsep.join([src, str(ROOT / "benchmarks")])
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, str(ROOT / "train.py"), *QUIET_RUN, *overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: train.py {what} failed:\n{result.stderr[-3000:]}")
