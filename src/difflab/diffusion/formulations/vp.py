"""The VP (DDPM) formulation on the core: a network ε/x0/v(x_t, t) on integer timesteps as a denoiser D(x, σ).

With ᾱ_t the schedule's table, x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε is the VE point x = x_0 + σ_t ε scaled by
α_t = √ᾱ_t, so σ_t = √((1-ᾱ_t)/ᾱ_t) and α(σ) = 1/√(1+σ²) (k-diffusion's DiscreteEpsDDPMDenoiser). A σ between
two timesteps is run at the nearest one, with its own α(σ) as input scale (k-diffusion's `quantize=True`); the
grids below only visit the schedule's own timesteps, and `round_sigma` moves any other level a sampler makes
(Heun's churn) to one, so D is exactly the trained network.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..samplers.continuous import DenoiserModule
from ..schedule import NoiseSchedule, check_prediction_type
from ..sigmas import karras_sigmas
from ..timesteps import SPACINGS, make_timesteps

# Any callable model(x_t, t) -> prediction; t is a LongTensor (N,) of timesteps in [0, T-1].
TimestepModel = Callable[[Tensor, Tensor], Tensor]
GRIDS = (*SPACINGS, "karras")


def alpha(sigma: float) -> float:
    """α = √ᾱ of the VP point at VE noise level σ: x_vp = α·x_ve (1 at σ = 0)."""
    return 1.0 / math.sqrt(1.0 + sigma * sigma)


class VP:
    """σ(t), α(σ), grids of timesteps and the denoiser of a `NoiseSchedule` (the DDPM tables)."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule
        ac = schedule.alphas_cumprod
        self.sigmas = ((1.0 - ac) / ac).sqrt()  # float64, increasing in t
        self._log_sigmas = self.sigmas.log()
        self._tables: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def sigma(self, t: int) -> float:
        """σ_t as a Python float; t = -1 means clean data (σ = 0)."""
        return 0.0 if t < 0 else float(self.sigmas[t])

    def timestep_of(self, sigma: Tensor) -> Tensor:
        """The timesteps (LongTensor, sigma's shape and device) whose σ_t is nearest to sigma in log σ."""
        dtype = sigma.dtype if sigma.is_floating_point() else torch.float32
        key = (sigma.device, dtype)
        if key not in self._tables:  # on sigma's device, so sampling on a GPU never waits for the CPU
            self._tables[key] = self._log_sigmas.to(sigma.device, dtype)
        table = self._tables[key]
        log_sigma = sigma.to(dtype).clamp(min=torch.finfo(dtype).tiny).log()
        right = torch.searchsorted(table, log_sigma).clamp(1, len(table) - 1)
        left = right - 1
        return torch.where((log_sigma - table[left]).abs() <= (table[right] - log_sigma).abs(), left, right)

    def round_sigma(self, sigma: float) -> float:
        """The schedule's σ_t nearest to sigma (in log σ): a noise level the network was trained at."""
        return self.sigma(int(self.timestep_of(torch.tensor([sigma], dtype=torch.float64))[0]))

    def timesteps(self, steps: int, spacing: str = "leading") -> Tensor:
        """Descending LongTensor of timesteps a `steps`-step sampler visits: `make_timesteps`' spacings, or
        "karras": EDM's ρ = 7 grid between σ_0 and σ_{T-1}, each level moved to its nearest timestep (repeats
        dropped, so very many steps on a short schedule can give fewer timesteps)."""
        if spacing != "karras":
            if spacing not in SPACINGS:
                raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {', '.join(GRIDS)}")
            return make_timesteps(self.schedule.timesteps, steps, spacing)
        T = self.schedule.timesteps
        if not 1 <= int(steps) <= T:
            raise ValueError(
                f"sampler steps must be between 1 and the schedule's {T} timesteps (got {steps})"
            )
        levels = karras_sigmas(int(steps), float(self.sigmas[0]), float(self.sigmas[-1]))[:-1]
        return self.timestep_of(levels).unique().flip(0)

    def sigma_grid(self, timesteps: Tensor) -> list[float]:
        """The σ of each timestep, then 0 (clean data): the grid a core sampler walks."""
        return [self.sigma(int(t)) for t in timesteps] + [0.0]

    def denoiser(
        self, model: TimestepModel, prediction_type: str = "epsilon", clip_x0: float | None = 1.0
    ) -> VPDenoiser:
        """D(x, σ) of a network model(x_t, t) trained on this schedule with `prediction_type`."""
        return VPDenoiser(model, self, prediction_type, clip_x0)


class VPDenoiser(DenoiserModule):
    """D(x, σ) = x̂_0 of a VP network: c_in = α(σ) scales x to x_t, then ε: x − σ ε̂; x0: the output;
    v: α² x − σ α v̂ (k-diffusion's DiscreteVDDPMDenoiser). x̂_0 is clipped to ±clip_x0 (None: not clipped),
    which keeps early, poor predictions in the data range; the sampler's ε̂ = (x − x̂_0)/σ follows it."""

    def __init__(self, model: TimestepModel, vp: VP, prediction_type: str, clip_x0: float | None) -> None:
        super().__init__()
        self.model = model  # an nn.Module is registered, so samplers find its device and dtype
        self.vp = vp
        check_prediction_type(prediction_type)
        self.prediction_type = prediction_type
        self.clip_x0 = clip_x0

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        t = self.vp.timestep_of(sigma)
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        c_in = (1.0 + s * s).rsqrt()
        out = self.model(x * c_in, t)
        if self.prediction_type == "epsilon":
            x0 = x - s * out
        elif self.prediction_type == "x0":
            x0 = out
        else:
            x0 = c_in * c_in * x - s * c_in * out
        return x0 if self.clip_x0 is None else x0.clamp(-self.clip_x0, self.clip_x0)
