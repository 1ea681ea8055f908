"""Exact denoisers for data whose distribution is known in closed form: every analytic test model lives here.

If x_0 ~ Σ_k w_k N(μ_k, s_k² I) then x_t ~ Σ_k w_k N(√ᾱ μ_k, (ᾱ s_k² + 1 - ᾱ) I), and the exact
ε-prediction is E[ε | x_t] = √(1-ᾱ) Σ_k r_k(x_t) (x_t - √ᾱ μ_k) / (ᾱ s_k² + 1 - ᾱ), with r_k the posterior
responsibility of component k. On the VE scale x = x_0 + σ ε (the continuous core's currency) the exact
denoiser is D(x, σ) = E[x_0 | x] = Σ_k r_k(x) (μ_k + s_k²/(s_k² + σ²) (x − μ_k)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.diffusion import NoiseSchedule


class GaussianMixtureDenoiser:
    """model(x_t, t) -> exact ε̂ for a mixture of isotropic Gaussians in d dimensions (x: (N, d))."""

    def __init__(self, schedule: NoiseSchedule, means: list[float], stds: list[float], weights: list[float]):
        self.schedule = schedule
        self.means = torch.tensor(means, dtype=torch.float64)
        self.stds = torch.tensor(stds, dtype=torch.float64)
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        a = self.schedule.alphas_cumprod[t.cpu()].to(torch.float64).view(-1, 1, 1)  # (N,1,1)
        xd = x.to(torch.float64).unsqueeze(-1)  # (N,d,1)
        mu = a.sqrt() * self.means.view(1, 1, -1)  # (N,1,K)
        var = a * self.stds.view(1, 1, -1) ** 2 + (1 - a)  # (N,1,K)
        d = x.shape[1]
        log_lik = -0.5 * ((xd - mu) ** 2 / var).sum(1, keepdim=True) - 0.5 * d * torch.log(2 * math.pi * var)
        resp = torch.softmax(log_lik + self.weights.log().view(1, 1, -1), dim=-1)  # (N,1,K)
        eps = (1 - a).sqrt().view(-1, 1) * ((xd - mu) / var * resp).sum(-1)
        return eps.to(x.dtype)

    def sample_data(self, n: int, d: int, generator: torch.Generator) -> Tensor:
        """Draw n points from the mixture itself."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return (self.means[k].unsqueeze(1) + self.stds[k].unsqueeze(1) * z).float()


class LabelledMixtureDenoiser:
    """model(x_t, t, cond=None) -> exact ε̂ for a labelled mixture with one component per class.

    With cond["labels"] the prediction is the exact ε of that class's Gaussian (the conditional branch);
    without labels, or where cond["drop"] is set, it is the whole mixture's (the unconditional branch), as a
    class-conditional net trained with condition dropout would learn at its optimum.
    """

    def __init__(self, schedule: NoiseSchedule, means: list[float], stds: list[float], weights: list[float]):
        self.mixture = GaussianMixtureDenoiser(schedule, means, stds, weights)
        self.components = [
            GaussianMixtureDenoiser(schedule, [m], [s], [1.0]) for m, s in zip(means, stds, strict=True)
        ]
        self.calls: list[int] = []  # batch size of every call (guidance must make one call per step)

    def __call__(self, x: Tensor, t: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        self.calls.append(x.shape[0])
        out = self.mixture(x, t)
        labels = (cond or {}).get("labels")
        if labels is None:
            return out
        conditional = ~cond["drop"] if "drop" in cond else torch.ones_like(labels, dtype=torch.bool)
        for k, component in enumerate(self.components):
            rows = conditional & (labels == k)
            if rows.any():
                out[rows] = component(x[rows], t[rows])
        return out


class ImageMixtureDenoiser:
    """Exact ε̂ for pictures drawn from an equal mixture of N(μ_k, s² I), μ_k (K, C, H, W); counts its calls.

    x_t | k ~ N(√ᾱ μ_k, (ᾱ s² + 1 - ᾱ) I), so E[ε | x_t] = √(1-ᾱ) Σ_k r_k (x_t - √ᾱ μ_k) / (ᾱ s² + 1 - ᾱ),
    with responsibilities r_k ∝ exp(-‖x_t - √ᾱ μ_k‖² / 2(ᾱ s² + 1 - ᾱ)) (same variance for every k).
    """

    def __init__(self, schedule: NoiseSchedule, means: Tensor, std: float = 0.0):
        self.schedule, self.means, self.std = schedule, means.double(), std
        self.calls: list[int] = []

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls.append(int(t[0]))
        a = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1, 1)  # (N, 1, 1, 1, 1)
        var = a * self.std**2 + 1 - a
        diff = x.double()[:, None] - a.sqrt() * self.means[None]  # (N, K, C, H, W)
        resp = torch.softmax(-(diff**2).sum((2, 3, 4), keepdim=True) / (2 * var), dim=1)
        return ((1 - a).sqrt() * resp * diff / var).sum(1).to(x.dtype)


class ExactSRDenoiser(torch.nn.Module):
    """Exact ε̂ when x_0 | low ~ N(μ, s² I) with μ = cond["low_res"]: x_t | low ~ N(√ᾱ μ, (ᾱ s² + 1 − ᾱ) I), so
    E[ε | x_t] = √(1−ᾱ) (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ). Data that is a function of its low-res input, plus noise."""

    def __init__(self, schedule: NoiseSchedule, std: float):
        super().__init__()
        self.schedule, self.std = schedule, std

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        a = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1).double()
        mu = cond["low_res"].double()
        var = a * self.std**2 + 1 - a
        return ((1 - a).sqrt() * (x.double() - a.sqrt() * mu) / var).to(x.dtype)


class WrongSRNet(torch.nn.Module):
    """Predicts x̂_0 = 0.5·low_res + 0.2 whatever x_t (in the given prediction type): a net whose outputs do
    not downsample to their input."""

    def __init__(self, schedule: NoiseSchedule, prediction_type: str):
        super().__init__()
        self.schedule, self.prediction_type = schedule, prediction_type
        self.scale = torch.nn.Parameter(torch.tensor(0.5))  # a parameter: samplers find device and dtype

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        x0 = self.scale * cond["low_res"] + 0.2
        eps = self.schedule.predict_eps_from_x0(x, t, x0)
        return self.schedule.training_target(x0, t, eps, self.prediction_type)


# The same kind of data on the VE scale x = x_0 + σ ε, the continuous core's currency.
class MixtureDenoiserOfSigma:
    """D(x, σ) -> exact x̂_0 for a mixture of isotropic Gaussians in d dimensions (x: (N, d), σ: (N,))."""

    def __init__(self, means: list[float], stds: list[float], weights: list[float]) -> None:
        self.means = torch.tensor(means, dtype=torch.float64)
        self.stds = torch.tensor(stds, dtype=torch.float64)
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.sigmas_seen: list[float] = []  # the noise level of every call

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.sigmas_seen.extend(float(s) for s in sigma[:1])
        s2 = sigma.to(torch.float64).view(-1, 1, 1) ** 2  # (N,1,1)
        xd = x.to(torch.float64).unsqueeze(-1)  # (N,d,1)
        mu = self.means.view(1, 1, -1)  # (1,1,K)
        var = self.stds.view(1, 1, -1) ** 2 + s2  # (N,1,K)
        d = x.shape[1]
        log_lik = -0.5 * ((xd - mu) ** 2 / var).sum(1, keepdim=True) - 0.5 * d * torch.log(2 * math.pi * var)
        resp = torch.softmax(log_lik + self.weights.log().view(1, 1, -1), dim=-1)  # (N,1,K)
        x0 = mu + self.stds.view(1, 1, -1) ** 2 / var * (xd - mu)  # (N,d,K)
        return (x0 * resp).sum(-1).to(x.dtype)

    def moments(self) -> tuple[float, float, float]:
        """The data's mean, variance (per coordinate) and the weight of the last component."""
        w, m, s = self.weights, self.means, self.stds
        mean = float((w * m).sum())
        return mean, float((w * (s**2 + m**2)).sum()) - mean**2, float(w[-1])
