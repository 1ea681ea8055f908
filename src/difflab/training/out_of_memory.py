"""A training run out of device memory, said in one line with the settings to lower (torch's message is a
paragraph about its allocator that names none of them)."""

from __future__ import annotations

import torch

from ..generation.memory import OutOfDeviceMemory, allocator_figures


def out_of_memory(error: BaseException, device: torch.device, batch_size: int) -> ValueError:
    """The one-line error for `error`, met on `device` in a run of `batch_size` images per device and step."""
    if isinstance(error, OutOfDeviceMemory):  # a callback's sampling (sample grid, FID)
        return ValueError(
            f"out of memory on {error.device} making batches of {error.batch_size} while a callback sampled"
            f"{error.figures}: lower callbacks.sample_grid.batch_size or callbacks.fid.batch_size (auto finds one "
            "that fits)"
        )
    return ValueError(
        f"out of memory on {device} in a training step of data.batch_size={batch_size} images per device"
        f"{allocator_figures(error)}: lower data.batch_size (trainer.accumulate_grad_batches=2 with half of it "
        "keeps the step's batch), or use trainer.precision=bf16-mixed"
    )
