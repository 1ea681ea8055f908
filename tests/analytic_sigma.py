"""The exact denoiser D(x, σ) = E[x_0 | x] of a Gaussian mixture on the VE scale x = x_0 + σ ε (the core's
currency; analytic.py has the ε-network of the same data on integer timesteps).

If x_0 ~ Σ_k w_k N(μ_k, s_k² I) then x ~ Σ_k w_k N(μ_k, (s_k² + σ²) I) and
E[x_0 | x] = Σ_k r_k(x) (μ_k + s_k²/(s_k² + σ²) (x − μ_k)), with r_k the posterior responsibility of component k.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
