"""Zero terminal SNR (Lin et al. 2024, Algorithm 1): rescale a schedule so its last timestep is pure noise.

√ᾱ is shifted so its last value is 0 and scaled so its first is unchanged. ᾱ_T = 0 exactly would be β_T = 1 and
σ_T = ∞, which neither the tables nor a sampler's first step can hold, so the last ᾱ is set to 2⁻²⁴ (what
diffusers' samplers use for a rescaled schedule: σ_T ≈ 4096, a signal of 2⁻¹² ≈ 0.0002 of the noise), or to half
the one before where that is smaller (β_T must stay below 1).
"""

from __future__ import annotations

from torch import Tensor

from ..schedule import NoiseSchedule

TERMINAL_ALPHA_BAR = 2.0**-24


def rescale_zero_terminal_snr(schedule: NoiseSchedule) -> NoiseSchedule:
    """A copy of `schedule` whose terminal SNR is (almost) zero and whose first ᾱ is unchanged."""
    root = schedule.alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    return NoiseSchedule(terminal_betas(root**2), name=f"{schedule.name}+zero_snr")


def terminal_betas(alphas_cumprod: Tensor) -> Tensor:
    """The betas of `alphas_cumprod` (ending at or near 0) with its last ᾱ set to TERMINAL_ALPHA_BAR, or to half the
    one before where that is smaller: a table every sampler can hold."""
    alphas_cumprod = alphas_cumprod.clone()
    alphas_cumprod[-1] = min(TERMINAL_ALPHA_BAR, float(alphas_cumprod[-2]) / 2)
    alphas = alphas_cumprod.clone()
    alphas[1:] = alphas_cumprod[1:] / alphas_cumprod[:-1]
    return 1.0 - alphas
