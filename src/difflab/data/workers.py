"""How many DataLoader worker processes this machine can usefully run."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM allocation), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def usable_workers(requested: int) -> int:
    """``requested`` lowered to the available cores: more workers than cores only contend (and torch warns)."""
    cores = available_cpus()
    if requested <= cores:
        return requested
    log.info("data.num_workers=%d lowered to %d, the CPU cores available to this process", requested, cores)
    return cores
