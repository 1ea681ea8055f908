"""cpu_threads=auto when nothing says how many threads a network should run on: time one network call with
torch's default thread count and with one thread, and keep the faster. On a small or busy CPU, OpenMP threads
spin on tiny convolutions (the digits net's training step: 0.116 s on one thread, 1.457 s on two), while a
large network's convolutions gain from every core."""

from __future__ import annotations

import logging
import os
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


def usable_cores() -> int:
    """The CPU cores this process may run on (a cluster job's share, not the whole node's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_SAID: set[tuple[str, int]] = set()  # the counts above the cores already warned of in this process


def set_thread_count(asked: int, key: str = "cpu_threads") -> int:
    """Set torch's intra-op threads to `asked`, at most the usable cores (with a warning naming `key`): threads
    beyond them only wait their turn. Before, cpu_threads=5000 ran 30 times slower on 2 cores and 10**6 crashed
    the process in torch. Returns the count set."""
    cores = usable_cores()
    # Once per setting: sample.py sets the count and its generation sets it again (review: said twice).
    if asked > cores and (key, asked) not in _SAID:
        _SAID.add((key, asked))
        log.warning(
            "%s=%d is more than the %d CPU cores this process may use: running on %d, as more threads only wait "
            "their turn",
            key,
            asked,
            cores,
            cores,
        )
    torch.set_num_threads(min(asked, cores))
    return torch.get_num_threads()
