"""batch_size=auto: on a GPU, the largest generation batch that fits in free memory, measured with two cheap
network calls; elsewhere a fixed default (a CPU has no memory wall worth probing, and big batches gain little)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .conditioning import CondFor
from .guidance import guided_for
from .precision import with_precision
from .samplers.base import Denoiser, model_device_dtype

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


def trial_call(
    model: Denoiser,
    n: int,
    sample_shape: Sequence[int],
    cond_for: CondFor | None = None,
    guidance: float = 1.0,
    negative_for: CondFor | None = None,
    precision: str = "fp32",
) -> Callable[[int], Tensor]:
    """call(b): one no-grad call of the guided, precision-wrapped denoiser `generate` itself calls, on b random
    inputs conditioned like samples 0..b-1 of n (what batch_size=auto and cpu_threads=auto measure)."""
    device, dtype = model_device_dtype(model) or (torch.device("cpu"), torch.float32)
    net = with_precision(model, precision)

    @torch.no_grad()
    def call(batch: int) -> Tensor:
        indices = [i % n for i in range(batch)]
        denoiser = guided_for(net, cond_for, indices, guidance, negative_for)
        x = torch.randn((batch, *sample_shape), device=device, dtype=dtype)
        return denoiser(x, torch.zeros(batch, device=device, dtype=torch.long))

    return call


def generation_batch_size(
    batch_size: int | str | None,
    model: Denoiser,
    n: int,
    sample_shape: Sequence[int],
    cond_for: CondFor | None = None,
    guidance: float = 1.0,
    negative_for: CondFor | None = None,
    precision: str = "fp32",
) -> int:
    """`batch_size` as given, or for "auto"/None the batch `generate` can use for n samples on the model's
    device: the trial calls are the guided, precision-wrapped denoiser `generate` itself calls."""
    if batch_size not in (None, AUTO):
        return int(batch_size)
    device = (model_device_dtype(model) or (torch.device("cpu"), None))[0]
    call = trial_call(model, n, sample_shape, cond_for, guidance, negative_for, precision)
    numel = 1
    for size in sample_shape:
        numel *= int(size)
    return auto_batch_size(call, n, numel, device)
