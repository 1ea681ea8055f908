"""What every sampler shares: the constructor, the timestep grid, the loop over `step`, and turning the
model's output into (x̂_0, ε̂)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..sample_noise import NoiseSource, draw_noise
from ..schedule import NoiseSchedule, check_prediction_type
from ..timesteps import make_timesteps

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
    """Base class: a subclass implements `step` (x_t -> x_{t_prev}) and adds only its own knobs.

    Every knob after the schedule is keyword-only. `steps=None` takes the class's `default_steps`
    (None there: every timestep of the schedule); `timestep_spacing=None` takes `default_spacing`.
    `clip_x0` clips x̂_0 to [-clip_x0, clip_x0] (the data range of images); None turns clipping off.
    """

    default_steps: int | None = 50
    default_spacing = "leading"

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        steps: int | None = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str | None = None,
        clip_x0: float | None = 1.0,
    ) -> None:
        self.schedule = schedule
        if steps is None:
            steps = (
                schedule.timesteps
                if self.default_steps is None
                else min(self.default_steps, schedule.timesteps)
            )
        self.steps = int(steps)
        check_prediction_type(prediction_type)
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing or self.default_spacing
        if clip_x0 is not None and not (math.isfinite(clip_x0) and clip_x0 > 0):
            raise ValueError(f"clip_x0 must be a finite number > 0, or None for no clipping (got {clip_x0})")
        self.clip_x0 = clip_x0
        self.timesteps = make_timesteps(schedule.timesteps, self.steps, self.timestep_spacing)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(steps={self.steps}, spacing={self.timestep_spacing!r}, "
            f"prediction_type={self.prediction_type!r}, clip_x0={self.clip_x0})"
        )

    @property
    def nfe(self) -> int:
        """Network evaluations per sample."""
        return len(self.timesteps)

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
        state: dict[str, Any] = {}
        for i, (t, t_prev) in enumerate(self._pairs(timesteps)):
            x = self.step(model, x, t, t_prev, generator, state)
            if callback is not None:
                callback(i, t, x)
        return x

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
        raise NotImplementedError

    def _predict(self, model: Denoiser, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """Run the model at integer timestep t and return (x̂_0, ε̂), with x̂_0 clipped if configured."""
        t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        out = model(x, t_batch)
        x0, eps = self.schedule.to_x0_and_eps(out, x, t_batch, self.prediction_type)
        if self.clip_x0 is not None:
            # Clipping x̂_0 to the data range keeps early, poor predictions from blowing up; ε̂ is
            # recomputed so that the pair stays consistent with x_t (as diffusers does).
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = self.schedule.predict_eps_from_x0(x, t_batch, x0)
        return x0, eps

    @staticmethod
    def _pairs(timesteps: Tensor) -> list[tuple[int, int]]:
        """(t, t_prev) for each step; the last step goes to t_prev = -1, i.e. ᾱ = 1 (clean data)."""
        ts = [int(t) for t in timesteps]
        return list(zip(ts, ts[1:] + [-1], strict=True))
