"""σ grids that do not depend on a formulation: Karras et al. (2022)'s ρ-spaced noise levels."""

from __future__ import annotations

import torch
from torch import Tensor


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """`steps` noise levels from sigma_max down to sigma_min, evenly spaced in σ^(1/ρ) (EDM eq. 5), then a final 0.

    ρ = 7 (the paper's choice) spends most steps at low noise, where the detail is decided. float64, length
    steps + 1: the last level is clean data, so a sampler walking the grid ends on x̂_0.
    """
    if int(steps) < 1:
        raise ValueError(f"a σ grid needs at least 1 step (got {steps})")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max (got {sigma_min}, {sigma_max})")
    if not rho > 0:
        raise ValueError(f"rho must be > 0 (got {rho})")
    ramp = (
        torch.linspace(0, 1, int(steps), dtype=torch.float64)
        if steps > 1
        else torch.zeros(1, dtype=torch.float64)
    )
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])
