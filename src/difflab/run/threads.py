"""How many CPU threads generation runs on when the command does not say (cpu_threads=auto)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
from omegaconf import DictConfig

from ..checkpoint import LoadedModel
from ..diffusion.auto_batch import AUTO, trial_call
from ..diffusion.conditioning import CondFor
from ..diffusion.cpu_threads import PROBE_BATCH, fastest_thread_count
from ..diffusion.samplers.base import model_device_dtype
from .rules import whole

log = logging.getLogger("difflab")


@contextlib.contextmanager
def generation_threads(
    cfg: DictConfig,
    loaded: LoadedModel,
    n: int,
    batch_size: int,
    cond_for: CondFor | None = None,
    negative_for: CondFor | None = None,
) -> Iterator[int | None]:
    """The CPU threads sample.py and evaluate.py generate with (yielded; None off the CPU), picked as training's
    recipes pick them: an explicit cpu_threads=N wins (set_cpu_threads set it); else OMP_NUM_THREADS when set
    (then torch's default is the user's); else the cpu_threads of the recipe the checkpoint was trained with;
    else measured on the network (fastest_thread_count). The count before is restored afterwards."""
    before = torch.get_num_threads()
    try:
        yield _pick_generation_threads(cfg, loaded, n, batch_size, cond_for, negative_for)
    finally:
        torch.set_num_threads(before)


def _pick_generation_threads(
    cfg: DictConfig,
    loaded: LoadedModel,
    n: int,
    batch_size: int,
    cond_for: CondFor | None,
    negative_for: CondFor | None,
) -> int | None:
    device = (model_device_dtype(loaded.net) or (torch.device("cpu"), None))[0]
    if device.type != "cpu":
        return None
    if cfg.get("cpu_threads") not in (None, AUTO) or os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    recipe = loaded.config.get("cpu_threads")
    if whole(1)(recipe) is None:  # a checkpoint is data: anything but a whole number >= 1 is ignored
        torch.set_num_threads(int(recipe))
        log.info("cpu_threads=%d, as the checkpoint's recipe trained", recipe)
        return int(recipe)
    guidance, precision = float(cfg.get("guidance", 1.0)), cfg.get("precision", "fp32")
    call = trial_call(loaded.net, n, loaded.sample_shape, cond_for, guidance, negative_for, precision)
    return fastest_thread_count(lambda: call(min(batch_size, n, PROBE_BATCH)))
