"""batch_size=auto: on a GPU, the largest generation batch that fits in free memory, measured with two cheap
network calls; elsewhere a fixed default (a CPU has no memory wall worth probing, and big batches gain little)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger("difflab")

AUTO = "auto"
CPU_BATCH = 64  # what batch_size=auto means off the GPU: sample.py's long-standing default
PROBE = (2, 6)  # two small trial batches: their difference cancels the fixed cost (weights, workspace)
HEADROOM = 0.8  # share of free memory to fill: the allocator fragments, the sampler keeps a few tensors
STATE_TENSORS = 8  # per-sample tensors a sampler holds besides the forward (x, x̂_0, ε̂, history, noise)


def peak_bytes(call: Callable[[int], Tensor], batch: int, device: torch.device) -> int:
    """Peak CUDA memory above what was allocated before one call(batch)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call(batch)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def auto_batch_size(
    call: Callable[[int], Tensor], n: int, sample_numel: int, device: torch.device, multiple: int = 8
) -> int:
    """The batch for n samples on `device`: CPU_BATCH off CUDA; on CUDA the largest that fits, from the memory
    of `call(b)` (one no-grad denoiser call on b samples) at two small b, capped at n, rounded down to `multiple`."""
    if device.type != "cuda":
        return min(n, CPU_BATCH)
    small, large = PROBE
    with torch.no_grad():
        per_sample = (peak_bytes(call, large, device) - peak_bytes(call, small, device)) / (large - small)
    per_sample = max(per_sample, 1.0) + STATE_TENSORS * sample_numel * 4
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * HEADROOM / per_sample)
    batch = max(1, min(n, fits if fits < multiple else fits // multiple * multiple))
    log.info(
        "batch_size=auto: %d (%.1f MiB per sample, %.1f GiB free on %s)",
        batch,
        per_sample / 2**20,
        free / 2**30,
        device,
    )
    return batch
