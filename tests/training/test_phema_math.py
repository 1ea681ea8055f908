"""Post-hoc EMA math against closed forms and EDM2's numbers: σ_rel ↔ γ, the power-function update and the
reconstruction of a profile from snapshots of two tracked ones."""

from __future__ import annotations

import pytest
import torch

from difflab.training.phema import (
    MAX_SIGMA_REL,
    gamma_to_sigma_rel,
    power_ema_beta,
    profile_fit_error,
    reconstruction_coefficients,
    sigma_rel_to_gamma,
    update_power_ema,
    weighted_sum,
)

TRACKED = (0.05, 0.10)  # EDM2's two profiles


@pytest.mark.parametrize(("sigma_rel", "gamma"), [(0.05, 16.97), (0.10, 6.94)])
def test_edm2_tabulated_exponents(sigma_rel, gamma):
    """EDM2 (sec. 3.1): σ_rel 0.05 and 0.10 are γ = 16.97 and 6.94."""
    assert sigma_rel_to_gamma(sigma_rel) == pytest.approx(gamma, abs=0.005)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 3.0, 6.94, 16.97, 100.0, 1000.0])
def test_gamma_sigma_rel_round_trip(gamma):
    assert sigma_rel_to_gamma(gamma_to_sigma_rel(gamma)) == pytest.approx(gamma, rel=1e-9, abs=1e-9)


def test_sigma_rel_is_the_profiles_relative_standard_deviation():
    """σ_rel(γ) is the std of h(τ) ∝ τ^γ on (0, 1], computed numerically."""
    tau = torch.linspace(0, 1, 2_000_001, dtype=torch.float64)
    for gamma in (1.0, 6.94, 16.97):
        density = tau**gamma / torch.trapezoid(tau**gamma, tau)
        mean = torch.trapezoid(tau * density, tau)
        std = torch.trapezoid((tau - mean) ** 2 * density, tau).sqrt()
        assert gamma_to_sigma_rel(gamma) == pytest.approx(std.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.3, 1.0])
def test_sigma_rel_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=f"sigma_rel={bad} is out of range"):
        sigma_rel_to_gamma(bad)
    assert sigma_rel_to_gamma(MAX_SIGMA_REL) == pytest.approx(0.0, abs=1e-9)


def test_power_ema_is_the_power_function_average():
    """The β_t recursion weighs θ_s by ((s/t)^(γ+1) − ((s−1)/t)^(γ+1)): on θ_s = s that is closed-form."""
    gamma, steps = 2.0, 50
    average = [torch.zeros(1, dtype=torch.float64)]
    for t in range(1, steps + 1):
        update_power_ema(average, [torch.tensor([float(t)], dtype=torch.float64)], gamma, t)
    s = torch.arange(1, steps + 1, dtype=torch.float64)
    weights = (s / steps) ** (gamma + 1) - ((s - 1) / steps) ** (gamma + 1)
    assert average[0].item() == pytest.approx((weights * s).sum().item(), rel=1e-12)
    assert power_ema_beta(gamma, 1) == 0.0  # the first step copies


def test_several_steps_at_once_equal_those_steps_one_by_one():
    """From step t₀ to t with the same weights: β = (t₀/t)^(γ+1), the product of the single steps' β."""
    gamma = 6.94
    one_by_one = [torch.tensor([5.0], dtype=torch.float64)]
    at_once = [one_by_one[0].clone()]
    current = [torch.tensor([-2.0], dtype=torch.float64)]
    for t in range(8, 13):
        update_power_ema(one_by_one, current, gamma, t)
    update_power_ema(at_once, current, gamma, 12, previous_step=7)
    torch.testing.assert_close(at_once[0], one_by_one[0], rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="counts steps from 1 upwards"):
        power_ema_beta(gamma, 0)


def tracked_run(weights: torch.Tensor, every: int, sigma_rels=TRACKED):
    """Snapshots (step, γ, average) every `every` steps of power EMAs of the rows of `weights` (one per step)."""
    gammas = [sigma_rel_to_gamma(s) for s in sigma_rels]
    averages = [torch.zeros(weights.shape[1], dtype=torch.float64) for _ in gammas]
    snapshots = []
    for t in range(1, len(weights) + 1):
        for average, gamma in zip(averages, gammas, strict=True):
            update_power_ema([average], [weights[t - 1]], gamma, t)
        if t % every == 0:
            snapshots += [
                (t, gamma, {"w": average.clone()}) for average, gamma in zip(averages, gammas, strict=True)
            ]
    return snapshots


def direct_power_ema(weights: torch.Tensor, sigma_rel: float) -> torch.Tensor:
    average, gamma = [torch.zeros(weights.shape[1], dtype=torch.float64)], sigma_rel_to_gamma(sigma_rel)
    for t in range(1, len(weights) + 1):
        update_power_ema(average, [weights[t - 1]], gamma, t)
    return average[0]


def reconstruct(snapshots, step: int, sigma_rel: float) -> torch.Tensor:
    x = reconstruction_coefficients(
        [s for s, _, _ in snapshots], [g for _, g, _ in snapshots], step, sigma_rel_to_gamma(sigma_rel)
    )
    return weighted_sum((state, c) for (_, _, state), c in zip(snapshots, x.tolist(), strict=True))["w"]


def test_a_tracked_profile_is_reconstructed_exactly():
    torch.manual_seed(0)
    weights = torch.randn(400, 5, dtype=torch.float64).cumsum(0)
    snapshots = tracked_run(weights, every=40)
    for index, sigma_rel in enumerate(TRACKED):
        x = reconstruction_coefficients(
            [s for s, _, _ in snapshots], [g for _, g, _ in snapshots], 400, sigma_rel_to_gamma(sigma_rel)
        )
        one_hot = torch.zeros(len(snapshots), dtype=torch.float64)
        one_hot[len(snapshots) - 2 + index] = 1.0  # the last snapshot of that profile
        torch.testing.assert_close(x, one_hot, atol=1e-9, rtol=0)
        torch.testing.assert_close(
            reconstruct(snapshots, 400, sigma_rel), snapshots[-2 + index][2]["w"], atol=1e-9, rtol=1e-12
        )


# Stated tolerance: the max error over the sequence's range of values, for 1,000 steps and snapshots every 50;
# measured 7e-5 … 4e-3 (linear, random walk) for σ_rel 0.03 … 0.20.
@pytest.mark.parametrize("sigma_rel", [0.03, 0.07, 0.15, 0.20])
@pytest.mark.parametrize("sequence", ["linear", "random_walk"])
def test_reconstruction_matches_the_directly_tracked_power_ema(sigma_rel, sequence):
    torch.manual_seed(1)
    steps = 1000
    if sequence == "linear":
        weights = torch.arange(1, steps + 1, dtype=torch.float64)[:, None]
    else:
        weights = torch.randn(steps, 8, dtype=torch.float64).cumsum(0)
    snapshots = tracked_run(weights, every=50)
    error = (reconstruct(snapshots, steps, sigma_rel) - direct_power_ema(weights, sigma_rel)).abs().max()
    scale = (weights.max(0).values - weights.min(0).values).max()
    assert error / scale < 5e-3
    # and it is a real reconstruction: the nearest tracked profile alone is much further off
    nearest = snapshots[-2 if sigma_rel < 0.075 else -1][2]["w"]
    assert (nearest - direct_power_ema(weights, sigma_rel)).abs().max() > 3 * error


def test_constant_weights_are_reproduced_by_any_reconstruction():
    """The coefficients sum to 1: a network that never changed reconstructs as itself for any σ_rel."""
    snapshots = tracked_run(torch.full((200, 2), 3.0, dtype=torch.float64), every=20)
    for sigma_rel in (0.01, 0.2, MAX_SIGMA_REL):
        torch.testing.assert_close(
            reconstruct(snapshots, 200, sigma_rel), torch.full((2,), 3.0, dtype=torch.float64)
        )


def numeric_fit_error(
    steps: list[int], gammas: list[float], step: int, gamma: float, x: torch.Tensor
) -> float:
    """‖h_target − Σ x_i h_i‖ / ‖h_target‖ by summing the profiles on a fine grid of (0, max step]."""
    tau = torch.linspace(0, max(*steps, step), 400_001, dtype=torch.float64)[1:]

    def h(t: int, g: float) -> torch.Tensor:
        return torch.where(tau <= t, (g + 1) / t * (tau / t) ** g, 0.0)

    fitted = sum(float(c) * h(t, g) for t, g, c in zip(steps, gammas, x, strict=True))
    target = h(step, gamma)
    return float(((target - fitted).square().sum() / target.square().sum()).sqrt())


@pytest.mark.parametrize("sigma_rel", [0.005, 0.01, 0.05, 0.07, 0.2, 0.28])
def test_the_profile_fit_error_is_the_distance_of_the_fitted_profile_from_the_wanted_one(sigma_rel):
    # Said at a rebuild far from the stored profiles; its closed form checked against the profiles summed on a grid.
    steps = [t for t in range(300, 3001, 300) for _ in TRACKED]
    gammas = [sigma_rel_to_gamma(r) for _ in range(300, 3001, 300) for r in TRACKED]
    gamma = sigma_rel_to_gamma(sigma_rel)
    x = reconstruction_coefficients(steps, gammas, 3000, gamma)
    error = profile_fit_error(steps, gammas, 3000, gamma, x)
    assert error == pytest.approx(numeric_fit_error(steps, gammas, 3000, gamma, x), rel=2e-3, abs=2e-4)
    if sigma_rel in TRACKED:
        assert error < 1e-6
    far = sigma_rel in (0.005, 0.01, 0.28)
    assert (error > 0.1) == far, error
