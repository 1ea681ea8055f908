"""How many CPU threads generation runs on when the request does not say (cpu_threads=auto)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from ..diffusion.auto_batch import AUTO
from ..diffusion.cpu_threads import PROBE_BATCH, fastest_thread_count, set_thread_count
from ..diffusion.samplers.base import Denoiser
from .request import GenerationRequest, Placement

log = logging.getLogger("difflab")


@contextlib.contextmanager
def generation_threads(
    request: GenerationRequest, net: Denoiser, batch_size: int, placement: Placement
) -> Iterator[int | None]:
    """The CPU threads `request` generates with on `net` (yielded; None off the CPU), picked as training's
    recipes pick them: an explicit cpu_threads=N wins; else OMP_NUM_THREADS when set (then torch's default is
    the user's); else the threads of the recipe the model was trained with; else measured on the network
    (fastest_thread_count). The count before is restored afterwards."""
    before = torch.get_num_threads()
    try:
        yield _pick(request, net, batch_size, placement)
    finally:
        torch.set_num_threads(before)


def _pick(request: GenerationRequest, net: Denoiser, batch_size: int, placement: Placement) -> int | None:
    if placement[0].type != "cpu":
        return None
    if request.cpu_threads not in (None, AUTO):
        return set_thread_count(int(request.cpu_threads))
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    if request.recipe_threads is not None:
        # A recipe made on a larger machine asks for more cores than this one has: at most these.
        threads = set_thread_count(request.recipe_threads, "the checkpoint's recipe's cpu_threads")
        if threads == request.recipe_threads:  # else the warning said how many and why
            log.info("cpu_threads=%d, as the checkpoint's recipe trained", threads)
        return threads
    call = request.trial_call(net, placement)
    n = len(request.indices)
    return fastest_thread_count(lambda: call(min(batch_size, n, PROBE_BATCH)))


def png_writer_threads(placement: Placement, most: int = 4) -> int:
    """Threads that may write one batch's PNGs while the next is generated (0: write them in turn). A network on
    a GPU leaves the CPU cores free; on the CPU only the cores its threads leave idle are taken, since a busy
    core slows its OpenMP threads far more than the writing would save."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if placement[0].type != "cpu":
        return min(most, cores)
    return max(0, min(most, cores - torch.get_num_threads()))
