"""The machine a benchmark ran on, named above its table: CPU models differ between runs of this project's VM and
bf16 ratios flip between them."""

from __future__ import annotations

import platform
import subprocess


def cpu_name() -> str:
    """The CPU's model name as lscpu reports it (the machine a number was measured on)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"
