"""Any formulation on the integer-timestep face: its network as an ε-model on a table of its own noise levels.

Every sampler, guidance, RePaint, SDEdit and super-resolution path of difflab takes model(x_t, t, cond) on a
`NoiseSchedule`. An EDM or flow network becomes one without touching them: the table holds T of the
formulation's noise levels (EDM: its ρ grid from σ_min to σ_max; flow: t uniform in (0, t_max], shifted), as a
VP schedule with ᾱ_t = 1/(1 + σ_t²), and the ε-model answers (x − D(x, σ_t))/σ_t at x = x_t/√ᾱ_t, where D is the
formulation's own denoiser. The face's VP denoiser turns that back into x − σ_t ε̂ = D(x, σ_t), so a sampler
walks the formulation's own D at the table's levels; the table asks for the formulation's own grid when a sampler
is given no spacing: EDM's N-step ρ = 7 grid from σ_max to σ_min (`karras`), flow's uniform t from t_max
(`trailing`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..schedule import NoiseSchedule
from ..sigmas import karras_sigmas
from .common import per_sample
from .edm import EDM
from .flow import Flow, shift_time
from .vp_training import VPTraining

TABLE_TIMESTEPS = (
    1000  # as many levels as a DDPM schedule: the faces' spacings and step counts work unchanged
)


# The grid a sampler walks on each table unless given a spacing. EDM: its N-step ρ = 7 grid from σ_max to σ_min
# (Karras et al. eq. 5, as diffusers' EDMEulerScheduler), to the table's 1,000 levels; "trailing" stopped short of
# σ_min (at 6 steps its last level was 0.051, not 0.002). Flow: every 1000/steps-th t from t_max.
OWN_GRID = {"edm": "karras", "flow": "trailing"}


def noise_levels(formulation: EDM | Flow, timesteps: int = TABLE_TIMESTEPS) -> Tensor:
    """`timesteps` increasing noise levels σ of the formulation's range (float64)."""
    if isinstance(formulation, EDM):
        grid = karras_sigmas(timesteps, formulation.sigma_min, formulation.sigma_max, formulation.rho)
        return grid[:-1].flip(0)
    t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps * formulation.t_max
    t = shift_time(t, formulation.shift)
    return t / (1.0 - t)


def table_schedule(formulation: EDM | Flow, timesteps: int = TABLE_TIMESTEPS) -> NoiseSchedule:
    """A VP schedule whose σ_t = √((1 − ᾱ_t)/ᾱ_t) are the formulation's noise levels."""
    alphas_cumprod = 1.0 / (1.0 + noise_levels(formulation, timesteps) ** 2)
    alphas = alphas_cumprod.clone()
    alphas[1:] = alphas_cumprod[1:] / alphas_cumprod[:-1]
    table = NoiseSchedule(1.0 - alphas, name=f"{formulation.name}_levels")
    table.grid_spacing = OWN_GRID[formulation.name]  # from σ_max, unless a spacing is asked for
    return table


class EpsilonFace(nn.Module):
    """model(x_t, t, cond) -> ε̂ of a formulation's network at the table's levels (see the module docstring)."""

    def __init__(self, net: Any, formulation: EDM | Flow, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.net = net  # registered, so samplers find its device and dtype
        self.formulation = formulation
        sigmas = ((1.0 - schedule.alphas_cumprod) / schedule.alphas_cumprod).sqrt()
        params = net.parameters() if isinstance(net, nn.Module) else iter(())
        device = next((p.device for p in params), torch.device("cpu"))
        self.register_buffer("sigmas", sigmas.to(device, torch.float32), persistent=False)

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        sigma = self.sigmas[torch.as_tensor(t, device=self.sigmas.device).long().reshape(-1)].expand(
            x_t.shape[0]
        )
        x = x_t * per_sample((1.0 + sigma * sigma).sqrt(), x_t)

        def net(x_in: Tensor, time: Tensor) -> Tensor:
            return self.net(x_in, time) if cond is None else self.net(x_in, time, cond)

        x0 = self.formulation.denoiser(net)(x, sigma)
        return (x - x0) / per_sample(sigma, x)


def sampling_view(
    net: nn.Module, schedule: NoiseSchedule, prediction_type: str, formulation: Any
) -> tuple[nn.Module, NoiseSchedule, str]:
    """(network, schedule, prediction type) that the timestep face samples for a model of `formulation`:
    VP (or None, a checkpoint from before formulations): its own (rescaled) schedule; EDM/flow: the ε-face."""
    if formulation is None:
        return net, schedule, prediction_type
    if isinstance(formulation, VPTraining):
        return net, formulation.schedule, formulation.prediction_type
    table = table_schedule(formulation)
    return EpsilonFace(net, formulation, table), table, "epsilon"
