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

PROBE_BATCH = 16  # samples per timed call: enough work to tell the two apart, cheap for a large network too
ROUNDS = 3  # timed calls per thread count, alternating (a busy machine slows both alike); the fastest counts


def fastest_thread_count(call: Callable[[], object]) -> int:
    """Set torch's intra-op threads to whichever of its current count and one runs `call()` faster; return it."""
    default = torch.get_num_threads()
    if default <= 1:
        return default
    fastest = {default: float("inf"), 1: float("inf")}
    for threads in fastest:  # warm-up: allocations, oneDNN's choice of kernels
        torch.set_num_threads(threads)
        call()
    for _ in range(ROUNDS):
        for threads in fastest:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            call()
            fastest[threads] = min(fastest[threads], time.perf_counter() - start)
    chosen = min(fastest, key=fastest.__getitem__)
    torch.set_num_threads(chosen)
    log.info(
        "cpu_threads=auto: %d (one network call: %.1f ms on 1 thread, %.1f ms on %d)",
        chosen,
        fastest[1] * 1e3,
        fastest[default] * 1e3,
        default,
    )
    return chosen
