"""The continuous core every sampler is written on: a denoiser D(x, σ) → x̂_0 on the variance-exploding scale.

x = x_0 + σ·ε (as in EDM and k-diffusion): a formulation (VP/DDPM tables today) turns its network into D, and a
sampler only ever walks a grid of noise levels σ_0 > σ_1 > … > σ_N (σ_N = 0 returns x̂_0), calling D. So a
sampler is written once and samples every formulation, and anything that changes the prediction (guidance, data
consistency) wraps D, never a sampler. Example with an exact denoiser (data ~ N(0.3, 0.5²)):

    import torch
    from difflab.diffusion import Heun, karras_sigmas

    def denoise(x, sigma):  # E[x_0 | x] for Gaussian data; any callable D(x, σ) -> x̂_0 works
        s2 = sigma.view(-1, 1) ** 2
        return (0.25 * x + 0.3 * s2) / (0.25 + s2)

    sigmas = karras_sigmas(40, sigma_min=0.002, sigma_max=80.0)  # ρ = 7, ends with σ = 0
    g = torch.Generator().manual_seed(0)
    x = sigmas[0] * torch.randn(10_000, 2, generator=g, dtype=torch.float64)  # pure noise at σ_max
    x0 = Heun().sample(denoise, x, sigmas, generator=g)  # x0.mean() ≈ 0.3, x0.std() ≈ 0.5
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..sample_noise import NoiseSource

# D(x, σ) -> x̂_0: x (N, ...) on the VE scale, σ a tensor (N,) of noise levels (float32, or float64 for float64
# x, on x's device).
SigmaDenoiser = Callable[[Tensor, Tensor], Tensor]
# callback(i, σ_i, x) after step i, x now at noise level σ_{i+1}.
SigmaCallback = Callable[[int, float, Tensor], None]


class DenoiserModule(nn.Module):
    """A denoiser D(x, σ) that is an nn.Module: what wraps D (data consistency) or makes it (a formulation).

    A timestep face samples it as it is, with no conversion from model(x_t, t), and the parameters of a network
    it holds tell samplers their device and dtype.
    """

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x̂_0 for x (N, ...) at noise levels sigma (N,)."""
        raise NotImplementedError


def denoise_at(denoiser: SigmaDenoiser, x: Tensor, sigma: float) -> Tensor:
    """D(x, σ) with one noise level for the whole batch, σ at least float32 (a bf16 σ would blur the levels)."""
    return denoiser(x, x.new_full((x.shape[0],), sigma, dtype=torch.promote_types(x.dtype, torch.float32)))


def slope(x: Tensor, x0: Tensor, sigma: float) -> Tensor:
    """dx/dσ of the probability-flow ODE, (x − x̂_0)/σ: the ε̂ that D implies (k-diffusion's `to_d`)."""
    return (x - x0) / sigma


class SigmaSampler:
    """A sampler on the core: `step` moves x from noise level σ to σ_next (< σ), `sample` walks a grid."""

    def nfe(self, steps: int) -> int:
        """Calls of D to walk a grid of `steps` steps (one per step unless a subclass says otherwise)."""
        return steps

    def step(
        self,
        denoiser: SigmaDenoiser,
        x: Tensor,
        sigma: float,
        sigma_next: float,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        """x at σ -> x at σ_next (0: clean data). `state` is kept by the caller across one trajectory (what a
        multistep method remembers; "steps": the grid's number of steps); noise comes from `generator`."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        denoiser: SigmaDenoiser,
        x: Tensor,
        sigmas: Sequence[float] | Tensor,
        generator: NoiseSource = None,
        callback: SigmaCallback | None = None,
    ) -> Tensor:
        """Walk x, at noise level sigmas[0], down the descending grid `sigmas`; returns x at sigmas[-1]
        (x̂_0 when the grid ends with 0). Start from pure noise with x = sigmas[0]·ε."""
        levels = [float(s) for s in sigmas]
        if any(b >= a for a, b in zip(levels, levels[1:], strict=False)) or levels[-1] < 0:
            raise ValueError(f"a σ grid must be strictly decreasing and end at σ ≥ 0 (got {levels})")
        state: dict[str, Any] = {"steps": len(levels) - 1}
        for i, (sigma, sigma_next) in enumerate(zip(levels, levels[1:], strict=False)):
            x = self.step(denoiser, x, sigma, sigma_next, generator, state)
            if callback is not None:
                callback(i, sigma, x)
        return x
