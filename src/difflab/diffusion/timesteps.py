"""Which timesteps a reduced-step sampler visits ("leading", "trailing", "linspace"), as in diffusers."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

SPACINGS = ("leading", "trailing", "linspace")


def make_timesteps(num_train_timesteps: int, steps: int, spacing: str = "leading") -> Tensor:
    """Descending LongTensor of `steps` distinct timesteps in [0, T-1].

    leading:  0, k, 2k, … with k = T // steps (DDIM paper; never visits t = T-1 unless steps = T);
    trailing: T-1, T-1-T/steps, … (starts from pure noise; Lin et al. 2024 recommend it for few steps);
    linspace: evenly spaced from 0 to T-1 inclusive, rounded.
    """
    T = int(num_train_timesteps)
    steps = int(steps)
    if not 1 <= steps <= T:
        raise ValueError(f"sampler steps must be between 1 and the schedule's {T} timesteps (got {steps})")
    if spacing == "leading":
        ts = np.arange(steps) * (T // steps)
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, steps).round()
    else:
        raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    ts = np.unique(ts.astype(np.int64))[::-1].copy()
    return torch.from_numpy(ts)
