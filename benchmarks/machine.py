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


def device_name(device: str) -> str:
    """The chip behind `device` ("cpu", "cuda", "cuda:1"): the GPU's name for CUDA, else the CPU's."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_name()


def machine_line() -> str:
    """'CPU: <model>' and, where CUDA is there, ', GPU: <name>': above the table of a benchmark whose train.py runs
    take accelerator=auto (which picks the GPU); a benchmark timing the CPU alone names cpu_name() only."""
    import torch

    gpu = f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"CPU: {cpu_name()}{gpu}"
