"""The forward (noising) process: β_t, ᾱ_t, q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0) and
conversions between ε-, x0- and v-predictions. Pure torch; tables are computed in float64."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "x0", "v")


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """The DDPM paper's schedule (Ho et al. 2020): β linear from 1e-4 to 0.02 (for T=1000)."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021: ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), β clipped at max_beta."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - f[1:] / f[:-1]
    return betas.clamp(max=max_beta)


def sigmoid_betas(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999
) -> Tensor:
    """Jabri et al. 2022 (RIN): ᾱ(t) follows a rescaled sigmoid; gentler than cosine at both ends."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    f = (-torch.sigmoid((steps * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    betas = 1 - f[1:] / f[:-1]
    return betas.clamp(min=0.0, max=max_beta)


BETA_SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}


def check_prediction_type(prediction_type: str) -> None:
    """A one-line error unless prediction_type is one difflab knows."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}"
        )


class NoiseSchedule:
    """β_1..β_T and everything derived from them, indexed by t = 0..T-1 (t=0 is the first noising step)."""

    # The timestep spacing a sampler walks when none is asked for; None: the sampler's own. A formulation's table
    # of noise levels (formulations/timestep_face.py) sets "trailing", so sampling starts at its σ_max.
    grid_spacing: str | None = None

    def __init__(self, betas: Tensor, name: str = "custom") -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a non-empty 1-D tensor with every value in (0, 1)")
        self.name = name
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        ac, ac_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.sqrt_alphas_cumprod = ac.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ac).sqrt()
        self.sqrt_recip_alphas_cumprod = ac.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / ac - 1.0).sqrt()
        # Posterior q(x_{t-1} | x_t, x_0), DDPM eqs. (6)-(7).
        self.posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        # The variance is 0 at t=0; clip the log to the next value, as in the DDPM code.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * ac_prev.sqrt() / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * self.alphas.sqrt() / (1.0 - ac)
        self._cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    @classmethod
    def from_name(cls, name: str, timesteps: int = 1000, **kwargs: float) -> NoiseSchedule:
        """Build a named schedule ("linear", "cosine" or "sigmoid") with T=timesteps."""
        if name not in BETA_SCHEDULES:
            raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(BETA_SCHEDULES)}")
        if int(timesteps) < 2:
            raise ValueError(f"timesteps must be at least 2 (got {timesteps})")
        return cls(BETA_SCHEDULES[name](int(timesteps), **kwargs), name=name)

    @property
    def timesteps(self) -> int:
        """T, the number of noising steps."""
        return self.betas.numel()

    def __len__(self) -> int:
        return self.timesteps

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, timesteps={self.timesteps})"

    # -- gathering per-timestep coefficients ------------------------------------------------------------

    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> Tensor:
        """A float64 table converted once per device and dtype (the training loop gathers every step)."""
        key = (name, device, dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=device, dtype=dtype)
        return self._cache[key]

    def gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Values of table `name` at timesteps t (N,), shaped (N, 1, ..., 1) to broadcast against `like`."""
        t = torch.as_tensor(t, device=like.device).long()
        if t.ndim == 0:
            t = t.expand(like.shape[0])
        table = self._table(name, like.device, like.dtype if like.is_floating_point() else torch.float32)
        return table[t].reshape(t.shape[0], *([1] * (like.ndim - 1)))

    def alpha_bar(self, t: int) -> float:
        """ᾱ at integer timestep t as a Python float; t = -1 means "before any noise" (ᾱ = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    # -- the forward process -----------------------------------------------------------------------------

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) in closed form: √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
        if noise is None:
            noise = torch.randn_like(x0)
        return (
            self.gather("sqrt_alphas_cumprod", t, x0) * x0
            + self.gather("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0)."""
        mean = self.gather("sqrt_alphas_cumprod", t, x0) * x0
        variance = (1.0 - self.gather("alphas_cumprod", t, x0)).expand_as(x0)
        return mean, variance

    def q_step(self, x_prev: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """One step of the forward chain, q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I)."""
        if noise is None:
            noise = torch.randn_like(x_prev)
        beta = self.gather("betas", t, x_prev)
        return (1.0 - beta).sqrt() * x_prev + beta.sqrt() * noise

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self.gather("posterior_mean_coef1", t, x_t) * x0
            + self.gather("posterior_mean_coef2", t, x_t) * x_t
        )
        variance = self.gather("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self.gather("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # -- conversions between parameterisations -----------------------------------------------------------

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - √(1-ᾱ) ε) / √ᾱ."""
        return (
            self.gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self.gather("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t - √ᾱ x_0) / √(1-ᾱ)."""
        return (self.gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0) / self.gather(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def velocity(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """v = √ᾱ ε - √(1-ᾱ) x_0 (Salimans & Ho 2022)."""
        return (
            self.gather("sqrt_alphas_cumprod", t, x0) * eps
            - self.gather("sqrt_one_minus_alphas_cumprod", t, x0) * x0
        )

    def training_target(self, x0: Tensor, t: Tensor, eps: Tensor, prediction_type: str) -> Tensor:
        """What a network of the given prediction type should output for (x_t, t)."""
        check_prediction_type(prediction_type)
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "x0":
            return x0
        return self.velocity(x0, t, eps)

    def to_x0_and_eps(
        self, prediction: Tensor, x_t: Tensor, t: Tensor, prediction_type: str
    ) -> tuple[Tensor, Tensor]:
        """Turn a network output of any prediction type into the pair (x̂_0, ε̂)."""
        check_prediction_type(prediction_type)
        if prediction_type == "epsilon":
            return self.predict_x0_from_eps(x_t, t, prediction), prediction
        if prediction_type == "x0":
            return prediction, self.predict_eps_from_x0(x_t, t, prediction)
        a = self.gather("sqrt_alphas_cumprod", t, x_t)
        s = self.gather("sqrt_one_minus_alphas_cumprod", t, x_t)
        # With x_t = a x0 + s ε and v = a ε - s x0 (a² + s² = 1): x0 = a x_t - s v, ε = s x_t + a v.
        return a * x_t - s * prediction, s * x_t + a * prediction
