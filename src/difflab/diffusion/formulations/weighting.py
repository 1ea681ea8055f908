"""Loss weightings as functions of the signal-to-noise ratio, in the form each training target needs.

On the VE scale x = x_0 + σ ε the signal-to-noise ratio is SNR = 1/σ² (VP: ᾱ/(1-ᾱ), the same number). Every
weighting below is stated as a weight w_x0(SNR) on the x_0 error ‖x̂_0 − x_0‖², then moved onto the error of
what the network predicts:

- ε: x̂_0 − x_0 = −σ (ε̂ − ε), so ‖x̂_0 − x_0‖² = ‖ε̂ − ε‖²/SNR and w_ε = w_x0/SNR;
- v (VP, v = α ε − σ_vp x_0 with α² + σ_vp² = 1): x̂_0 = α x_t − σ_vp v̂, so x̂_0 − x_0 = −σ_vp (v̂ − v) and,
  as σ_vp² = 1 − ᾱ = 1/(SNR + 1), w_v = w_x0/(SNR + 1);
- x_0: w_x0 itself.

Min-SNR-γ (Hang et al. 2023) takes w_x0 = min(SNR, γ): ε's uniform loss is w_x0 = SNR, clamped at γ. So
ε: min(SNR, γ)/SNR, x0: min(SNR, γ), v: min(SNR, γ)/(SNR + 1) (the v form some trainers got wrong, dividing by
SNR). EDM's λ(σ) = (σ² + σ_data²)/(σ σ_data)² is a weight on ‖D − x_0‖² (its own x_0 error).
"""

from __future__ import annotations

from torch import Tensor

WEIGHTINGS = ("uniform", "min_snr", "edm")


def require_gamma(gamma: float) -> float:
    """γ of min-SNR-γ if it is a number > 0, else a one-line error."""
    if not gamma > 0:
        raise ValueError(f"min_snr_gamma must be > 0 (got {gamma})")
    return float(gamma)


def require_weighting(weighting: str, allowed: tuple[str, ...], formulation: str) -> str:
    """The weighting if `formulation` offers it, else a one-line error naming the ones it does."""
    if weighting not in allowed:
        raise ValueError(
            f"unknown weighting {weighting!r} for formulation={formulation}; choose one of {', '.join(allowed)}"
        )
    return weighting


def min_snr_weight(snr: Tensor, gamma: float, target: str) -> Tensor:
    """Min-SNR-γ's weight on the loss of a network predicting `target` ("epsilon", "x0" or "v")."""
    clamped = snr.clamp(max=gamma)
    if target == "epsilon":
        return clamped / snr
    if target == "x0":
        return clamped
    if target == "v":
        return clamped / (snr + 1.0)
    raise ValueError(f"min-SNR has no form for target {target!r}; choose one of epsilon, x0, v")


def edm_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """EDM's λ(σ) = (σ² + σ_data²)/(σ σ_data)², the weight on ‖D(x, σ) − x_0‖² (Karras et al. 2022, Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
