"""cpu_threads=auto when nothing says how many threads a network should run on: time one network call with
torch's default thread count and with one thread, and keep the faster. On a small or busy CPU, OpenMP threads
spin on tiny convolutions (the digits net's training step: 0.116 s on one thread, 1.457 s on two), while a
large network's convolutions gain from every core."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

log = logging.getLogger("difflab")

REPEATS = 3  # timed calls per thread count, after one untimed warm-up; the fastest counts
LARGE_S = (
    0.5  # a call this slow on the default threads has convolutions big enough to use them: not timed further
)


def _fastest_call(call: Callable[[], object]) -> float:
    """Seconds of the fastest of REPEATS calls, after one warm-up (allocations, oneDNN's kernel choice)."""
    call()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def fastest_thread_count(call: Callable[[], object]) -> int:
    """Set torch's intra-op threads to whichever of its current count and one runs `call()` faster; return it."""
    default = torch.get_num_threads()
    if default <= 1:
        return default
    many = _fastest_call(call)
    if many >= LARGE_S:
        log.info("cpu_threads=auto: %d (one network call takes %.2f s on them)", default, many)
        return default
    torch.set_num_threads(1)
    one = _fastest_call(call)
    threads = 1 if one < many else default
    torch.set_num_threads(threads)
    log.info(
        "cpu_threads=auto: %d (one network call: %.1f ms on 1 thread, %.1f ms on %d)",
        threads,
        one * 1e3,
        many * 1e3,
        default,
    )
    return threads
