"""The integer-timestep face of the core samplers: `DDIMSampler(schedule, steps, eta).sample(model, shape)`.

A face holds a core sampler (continuous.py) and the VP formulation of its schedule: it turns model(x_t, t) into
D(x, σ), its timesteps into a σ grid and x_t into the VE point x_t/α_t, lets the core walk the grid, and scales
back. Nothing about an algorithm lives here.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..formulations.vp import VP, alpha
from ..sample_noise import NoiseSource, draw_noise
from ..schedule import NoiseSchedule, check_prediction_type
from .continuous import DenoiserModule, SigmaSampler

# Any callable model(x_t, t) -> prediction; t is a LongTensor (N,) of timesteps in [0, T-1].
Denoiser = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, int, Tensor], None]


def model_device_dtype(model: Denoiser) -> tuple[torch.device, torch.dtype] | None:
    """The device and floating dtype a model's parameters live on; None for a plain callable."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device, p.dtype if p.is_floating_point() else torch.float32
    return None


class Sampler:
    """Base class of the faces: a subclass passes its core sampler and adds only its own knobs.

    Every knob after the schedule is keyword-only. `steps=None` takes the class's `default_steps`
    (None there: every timestep of the schedule); `timestep_spacing=None` takes the schedule's `grid_spacing`
    (a formulation's table: "trailing") or else the class's `default_spacing` ("leading", "trailing",
    "linspace" or "karras"). `clip_x0` clips x̂_0 to [-clip_x0, clip_x0] (the data
    range of images); None turns clipping off.
    """

    default_steps: int | None = 50
    default_spacing = "leading"

    def __init__(
        self,
        schedule: NoiseSchedule,
        core: SigmaSampler,
        *,
        steps: int | None = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str | None = None,
        clip_x0: float | None = 1.0,
    ) -> None:
        if not hasattr(schedule, "alphas_cumprod"):  # "linear": before, 'str' object has no attribute …
            raise ValueError(f"schedule must be a NoiseSchedule (got {type(schedule).__name__} {schedule!r})")
        # A whole number: before, 2.5 became 2, True became 1 and "10" was taken.
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral)):
            raise ValueError(f"steps must be a whole number (got {type(steps).__name__} {steps!r})")
        self.schedule = schedule
        self.core = core
        self.formulation = VP(schedule)
        if steps is None:
            steps = (
                schedule.timesteps
                if self.default_steps is None
                else min(self.default_steps, schedule.timesteps)
            )
        self.steps = int(steps)
        check_prediction_type(prediction_type)
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing or schedule.grid_spacing or self.default_spacing
        if clip_x0 is not None and not (math.isfinite(clip_x0) and clip_x0 > 0):
            raise ValueError(f"clip_x0 must be a finite number > 0, or None for no clipping (got {clip_x0})")
        self.clip_x0 = clip_x0
        self.timesteps = self.formulation.timesteps(self.steps, self.timestep_spacing)
        if len(self.timesteps) < self.steps:  # karras: nearby σ levels round to one timestep
            warnings.warn(
                f"timestep_spacing={self.timestep_spacing} gives {len(self.timesteps)} distinct timesteps for "
                f"steps={self.steps} on the schedule's {schedule.timesteps}: the sampler takes {len(self.timesteps)} "
                "steps",
                # Here, not the caller's line: built through Hydra's instantiate, that line is Hydra's own, and
                # difflab's warnings are shown as one plain line only when raised in difflab.
                stacklevel=1,
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(steps={self._steps_taken()}, spacing={self.timestep_spacing!r}, "
            f"prediction_type={self.prediction_type!r}, clip_x0={self.clip_x0})"
        )

    def _steps_taken(self) -> str:
        """The steps as the sampler takes them: fewer than asked where karras levels share a timestep."""
        taken = len(self.timesteps)
        return str(taken) if taken == self.steps else f"{taken} (of {self.steps} asked)"

    @property
    def nfe(self) -> int:
        """Network evaluations per sample."""
        return self.core.nfe(len(self.timesteps))

    def denoiser(self, model: Denoiser | DenoiserModule) -> DenoiserModule:
        """D(x, σ) of `model` with this sampler's prediction type and clipping; a DenoiserModule (D already,
        e.g. wrapped for data consistency) as it is."""
        if isinstance(model, DenoiserModule):
            return model
        return self.formulation.denoiser(model, self.prediction_type, self.clip_x0)

    @torch.no_grad()
    def sample(
        self,
        model: Denoiser,
        shape: Sequence[int],
        generator: NoiseSource = None,
        x_T: Tensor | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Generate samples of `shape` from pure noise x_T (drawn from `generator` when not given).

        `generator` is a torch.Generator for the whole batch or a `SampleGenerators` (one per sample).
        """
        placement = model_device_dtype(model)
        if x_T is None:
            device, dtype = placement or (torch.device("cpu"), torch.float32)
            x_T = draw_noise(shape, generator, device, dtype)
        elif tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape {tuple(shape)} was asked for")
        elif placement is not None:
            x_T = x_T.to(*placement)
        return self.denoise(model, x_T, self.timesteps, generator, callback)

    def denoise(
        self,
        model: Denoiser,
        x: Tensor,
        timesteps: Tensor,
        generator: NoiseSource = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Denoise x, which is at noise level timesteps[0], down to x_0 along `timesteps` (descending);
        SDEdit starts here from a noised picture."""
        ts = [int(t) for t in timesteps]
        sigmas = self.formulation.sigma_grid(timesteps)
        core_callback = None
        if callback is not None:

            def core_callback(i: int, sigma: float, x_ve: Tensor) -> None:
                callback(i, ts[i], x_ve * alpha(sigmas[i + 1]))  # back on the VP scale of the next level

        x_ve = x * math.sqrt(1.0 + sigmas[0] ** 2)  # x_t / α_t
        return self.core.sample(self.denoiser(model), x_ve, sigmas, generator, core_callback)

    def step(
        self,
        model: Denoiser,
        x: Tensor,
        t: int,
        t_prev: int,
        generator: NoiseSource = None,
        state: dict[str, Any] | None = None,
    ) -> Tensor:
        """One step from x_t to x_{t_prev} (t_prev = -1: clean data), calling the model.

        `state` is a dict kept by the caller across one trajectory: what a multistep method remembers
        (None: a fresh trajectory). Stochastic samplers draw their noise from `generator`.
        """
        state = {} if state is None else state
        state.setdefault("steps", len(self.timesteps))
        sigma, sigma_next = self.formulation.sigma(t), self.formulation.sigma(t_prev)
        x_ve = x * math.sqrt(1.0 + sigma * sigma)
        x_next = self.core.step(self.denoiser(model), x_ve, sigma, sigma_next, generator, state)
        return x_next * alpha(sigma_next)
