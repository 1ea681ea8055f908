"""Post-hoc EMA math (EDM2, Karras et al. 2024, appendix C): power-function EMA profiles, their σ_rel ↔ γ
conversion and the least-squares combination of stored snapshots that approximates any other profile.

Pure torch. Time t counts optimizer steps (EDM2 counts images; the profiles are the same, as only ratios of
times enter). A power-function EMA of exponent γ, read at step t, weighs the weights θ_s of step s ≤ t by

    h_{γ,t}(τ) = (γ + 1) τ^γ / t^(γ + 1)  on τ ∈ (0, t],

and is tracked with one lerp per step: θ̂_t = β_t θ̂_{t-1} + (1 − β_t) θ_t with β_t = (1 − 1/t)^(γ + 1).
That recursion gives θ_s the weight ∫_{s-1}^{s} h_{γ,t}: it is h_{γ,t} exactly for weights constant within
a step, which is why the continuous inner products below reconstruct a discrete EMA.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..compat import lerp_all_

# The largest σ_rel a power function with γ ≥ 0 reaches (γ = 0, a plain average of every step so far).
MAX_SIGMA_REL = 12**-0.5


def gamma_to_sigma_rel(gamma: float) -> float:
    """σ_rel of the profile of exponent γ: its standard deviation over its length (EDM2 eq. 123)."""
    return ((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))) ** 0.5


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent γ ≥ 0 whose profile has this σ_rel: the largest real root of
    γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²) = 0 (EDM2 eq. 126), found as an eigenvalue of its companion matrix."""
    check_sigma_rel(sigma_rel)
    c = sigma_rel**-2
    companion = torch.tensor(
        [[-7.0, -(16.0 - c), -(12.0 - c)], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64
    )
    roots = torch.linalg.eigvals(companion)
    real = roots.real[roots.imag.abs() < 1e-6 * (1 + roots.abs())]
    return max(float(real.max()), 0.0)  # σ_rel = MAX_SIGMA_REL gives γ = 0 up to rounding


def check_sigma_rel(sigma_rel: float) -> None:
    """Refuse a σ_rel no power-function profile with γ ≥ 0 has (ValueError naming the range)."""
    if not 0.0 < sigma_rel <= MAX_SIGMA_REL:
        raise ValueError(
            f"sigma_rel={sigma_rel} is out of range: a power-function EMA has 0 < sigma_rel <= "
            f"{MAX_SIGMA_REL:.6f} (1/sqrt(12), a plain average); EDM2 uses 0.01 to 0.25"
        )


def power_ema_beta(gamma: float, step: int, previous_step: int | None = None) -> float:
    """β = (t₀ / t)^(γ + 1) with t₀ = t − 1 by default: (1 − 1/t)^(γ + 1), the share of the average kept at
    step t ≥ 1 (0 at t = 1: a copy). From an earlier t₀ it is the product of the steps' β between them, as
    EDM2's (1 − t_delta / t_next)^(γ + 1)."""
    previous = step - 1 if previous_step is None else previous_step
    if not 0 <= previous < step:
        raise ValueError(f"a power-function EMA counts steps from 1 upwards (got {previous} -> {step})")
    return (previous / step) ** (gamma + 1.0)


@torch.no_grad()
def update_power_ema(
    average: Sequence[Tensor],
    current: Sequence[Tensor],
    gamma: float,
    step: int,
    previous_step: int | None = None,
) -> None:
    """The power-function EMA from `previous_step` (default step − 1) to `step`, with `current` as the weights
    of every step between: average ← β average + (1 − β) current, in place (one foreach lerp; float tensors)."""
    lerp_all_(average, current, 1.0 - power_ema_beta(gamma, step, previous_step))


def profile_inner_products(steps_a: Tensor, gammas_a: Tensor, steps_b: Tensor, gammas_b: Tensor) -> Tensor:
    """⟨h_a, h_b⟩ = ∫ h_{γa,ta} h_{γb,tb} dτ for every pair (rows a, columns b), in closed form:
    (γa + 1)(γb + 1) / ((γa + γb + 1) t_max) · (t_min / t_max)^(γ of the longer one) (EDM2 eq. 151)."""
    ta, ga = steps_a.double()[:, None], gammas_a.double()[:, None]
    tb, gb = steps_b.double()[None, :], gammas_b.double()[None, :]
    a_shorter = ta <= tb
    ratio = torch.where(a_shorter, ta / tb, tb / ta)
    longer_gamma = torch.where(a_shorter, gb, ga)
    t_max = torch.maximum(ta, tb)
    return (ga + 1) * (gb + 1) / ((ga + gb + 1) * t_max) * ratio**longer_gamma


def reconstruction_coefficients(
    snapshot_steps: Sequence[int], snapshot_gammas: Sequence[float], target_step: int, target_gamma: float
) -> Tensor:
    """Weights x (float64, one per snapshot) such that Σ x_i h_i is the least-squares fit of h_target in
    L²(0, ∞): the normal equations A x = b of the closed-form inner products, then x scaled to sum to 1 so a
    constant sequence of weights is reproduced exactly (as EDM2's solve_posthoc_coefficients)."""
    if not snapshot_steps:
        raise ValueError("no snapshots to reconstruct from")
    steps = torch.tensor(list(snapshot_steps), dtype=torch.float64)
    gammas = torch.tensor(list(snapshot_gammas), dtype=torch.float64)
    a = profile_inner_products(steps, gammas, steps, gammas)
    b = profile_inner_products(
        steps,
        gammas,
        torch.tensor([float(target_step)], dtype=torch.float64),
        torch.tensor([float(target_gamma)], dtype=torch.float64),
    )
    x = torch.linalg.lstsq(a, b, driver="gelsd").solution[:, 0]  # A is near-singular for close snapshots
    return x / x.sum()


def profile_fit_error(
    snapshot_steps: Sequence[int],
    snapshot_gammas: Sequence[float],
    target_step: int,
    target_gamma: float,
    coefficients: Tensor,
) -> float:
    """How far Σ x_i h_i is from h_target, as ‖h_target − Σ x_i h_i‖ / ‖h_target‖ in L²(0, ∞): 0 when the target is
    one of the stored profiles, large when it lies far outside them (a short σ_rel from long ones)."""
    steps = torch.tensor(list(snapshot_steps), dtype=torch.float64)
    gammas = torch.tensor(list(snapshot_gammas), dtype=torch.float64)
    target_steps = torch.tensor([float(target_step)], dtype=torch.float64)
    target_gammas = torch.tensor([float(target_gamma)], dtype=torch.float64)
    x = coefficients.double()
    a = profile_inner_products(steps, gammas, steps, gammas)
    b = profile_inner_products(steps, gammas, target_steps, target_gammas)[:, 0]
    norm = profile_inner_products(target_steps, target_gammas, target_steps, target_gammas)[0, 0]
    squared = norm - 2 * x @ b + x @ a @ x
    return float((squared.clamp(min=0) / norm).sqrt())


def weighted_sum(terms: Iterable[tuple[Mapping[str, Tensor], float]]) -> dict[str, Tensor]:
    """Σ c_i state_i over (state, c) pairs read one at a time (a snapshot file each: only one is in memory),
    summed in float64 and returned in each tensor's dtype; non-float tensors come from the last state."""
    total: dict[str, Tensor] = {}
    last: Mapping[str, Tensor] = {}
    for state, coefficient in terms:
        for key, tensor in state.items():
            if tensor.is_floating_point():
                term = float(coefficient) * tensor.double()
                total[key] = total[key] + term if key in total else term
        last = state
    if not last:
        raise ValueError("no states to combine")
    return {k: total[k].to(v.dtype) if v.is_floating_point() else v.clone() for k, v in last.items()}
