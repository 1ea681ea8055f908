"""EDM (Karras et al. 2022): σ_data-aware preconditioning, log-normal σ in training, λ(σ), a ρ grid for sampling.

D(x, σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ)) with (Table 1)
  c_skip = σ_data²/(σ² + σ_data²), c_out = σ σ_data/√(σ² + σ_data²), c_in = 1/√(σ² + σ_data²), c_noise = ln(σ)/4.
Training draws ln σ ~ N(P_mean, P_std²) and minimises w(σ)‖D(x_0 + σε, σ) − x_0‖². Written on F, that is
w c_out² ‖F − (x_0 − c_skip x)/c_out‖²; with EDM's λ(σ), λ c_out² = 1, so the network's loss is unweighted.
weighting="learned" is EDM2's λ(σ)/e^{u(σ)} with a learned u (learned_weighting.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..samplers.continuous import DenoiserModule
from ..sigmas import karras_sigmas
from .common import Network, per_sample, randn, require_positive, weighted_mse
from .learned_weighting import LearnedUncertainty, uncertainty_weighted_loss
from .weighting import edm_weight, min_snr_weight, require_gamma, require_weighting

EDM_WEIGHTINGS = ("edm", "uniform", "min_snr", "learned")


class EDM:
    """EDM's preconditioning, training distribution, loss weighting and σ grid (NVlabs/edm's EDMPrecond/EDMLoss)."""

    name = "edm"

    def __init__(
        self,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        weighting: str = "edm",
        min_snr_gamma: float = 5.0,
    ) -> None:
        self.sigma_data = require_positive("sigma_data", sigma_data)
        self.p_mean = float(p_mean)
        self.p_std = require_positive("p_std", p_std)
        self.sigma_min = require_positive("sigma_min", sigma_min)
        self.sigma_max = require_positive("sigma_max", sigma_max)
        if not sigma_min < sigma_max:
            raise ValueError(f"sigma_min must be below sigma_max (got {sigma_min}, {sigma_max})")
        self.rho = require_positive("rho", rho)
        self.weighting = require_weighting(weighting, EDM_WEIGHTINGS, self.name)
        self.min_snr_gamma = require_gamma(min_snr_gamma)
        # EDM2's u(σ): trained and saved by the training module (which registers it), unused by D.
        self.uncertainty = LearnedUncertainty() if weighting == "learned" else None

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) at noise levels sigma, EDM Table 1."""
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return sd2 / total, sigma * self.sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4

    def draw_sigma(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Training noise levels: ln σ ~ N(P_mean, P_std²)."""
        return (randn(n, device, generator) * self.p_std + self.p_mean).exp()

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """w(σ) on ‖D − x_0‖²: λ(σ) (also under learned's e^{-u}), 1, or min-SNR-γ's min(1/σ², γ) (D predicts x_0)."""
        if self.weighting in ("edm", "learned"):
            return edm_weight(sigma, self.sigma_data)
        if self.weighting == "min_snr":
            return min_snr_weight(sigma**-2, self.min_snr_gamma, "x0")
        return torch.ones_like(sigma)

    def training_example(
        self, x0: Tensor, sigma: Tensor, noise: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(network input, network time c_noise, target of F, weight on F's error) at noise levels sigma."""
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        x = x0 + per_sample(sigma, x0) * noise
        target = (x0 - per_sample(c_skip, x0) * x) / per_sample(c_out, x0)
        return per_sample(c_in, x0) * x, c_noise, target, self.loss_weight(sigma) * c_out**2

    def loss(self, net: Network, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One training loss: draw σ (first) and ε (second) from generator, regress F on its target."""
        sigma = self.draw_sigma(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_in, time, target, weight = self.training_example(x0, sigma, noise)
        if self.uncertainty is None:
            return weighted_mse(net(x_in, time), target, weight)
        squared_error = (net(x_in, time).float() - target.float()) ** 2
        return self.uncertainty_loss(per_sample(weight, squared_error) * squared_error, sigma)

    def uncertainty_loss(self, weighted_squared_error: Tensor, sigma: Tensor) -> Tensor:
        """EDM2 eq. 21 on errors already weighted by w(σ): mean of e^{-u(σ)}·error + u(σ)."""
        return uncertainty_weighted_loss(weighted_squared_error, self.uncertainty(sigma.log() / 4))

    def sigmas(self, steps: int) -> Tensor:
        """The sampling grid: `steps` levels ρ-spaced from σ_max to σ_min, then 0 (EDM eq. 5)."""
        return karras_sigmas(int(steps), self.sigma_min, self.sigma_max, self.rho)

    def denoiser(self, net: Network, clip_x0: float | None = None) -> EDMDenoiser:
        """D(x, σ) of a network F trained with this preconditioning."""
        return EDMDenoiser(net, self, clip_x0)


class EDMDenoiser(DenoiserModule):
    """D(x, σ) = c_skip x + c_out F(c_in x, c_noise), optionally clipped to ±clip_x0."""

    def __init__(self, net: Network, edm: EDM, clip_x0: float | None = None) -> None:
        super().__init__()
        self.model = net
        self.edm = edm
        self.clip_x0 = clip_x0

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        c_skip, c_out, c_in, c_noise = self.edm.preconditioning(
            sigma.to(torch.promote_types(x.dtype, torch.float32))
        )
        out = self.model(x * per_sample(c_in, x), c_noise)
        x0 = per_sample(c_skip, x) * x + per_sample(c_out, x) * out.to(x.dtype)
        return x0 if self.clip_x0 is None else x0.clamp(-self.clip_x0, self.clip_x0)
