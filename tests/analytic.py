"""Exact denoisers for data whose distribution is known in closed form (shared by the sampler tests).

If x_0 ~ Σ_k w_k N(μ_k, s_k² I) then x_t ~ Σ_k w_k N(√ᾱ μ_k, (ᾱ s_k² + 1 - ᾱ) I), and the exact
ε-prediction is E[ε | x_t] = √(1-ᾱ) Σ_k r_k(x_t) (x_t - √ᾱ μ_k) / (ᾱ s_k² + 1 - ᾱ), with r_k the posterior
responsibility of component k.
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
