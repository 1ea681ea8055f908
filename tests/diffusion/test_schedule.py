"""The forward process: closed form, schedules, posterior and the ε/x0/v conversions."""

import pytest
import torch

from difflab.diffusion import NoiseSchedule

SCHEDULES = ["linear", "cosine", "sigmoid"]


@pytest.mark.parametrize("name", SCHEDULES)
def test_alpha_bar_decreases_to_nearly_zero(name):
    s = NoiseSchedule.from_name(name, timesteps=1000)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.shape == (1000,)
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())
    assert s.alphas_cumprod[0] > 0.99
    assert s.alphas_cumprod[-1] < 1e-3


def test_linear_schedule_is_the_ddpm_papers():
    s = NoiseSchedule.from_name("linear", timesteps=1000)
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)


def test_cosine_schedule_follows_its_closed_form_and_is_clipped():
    s = NoiseSchedule.from_name("cosine", timesteps=1000)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = (
        torch.cos((t + 0.008) / 1.008 * torch.pi / 2) ** 2
        / torch.cos(torch.tensor(0.008 / 1.008 * torch.pi / 2, dtype=torch.float64)) ** 2
    )
    # Away from the β=0.999 clip at the very end the cumulative product is the closed form.
    torch.testing.assert_close(s.alphas_cumprod[:990], f[:990], rtol=1e-9, atol=1e-12)
    assert s.betas.max().item() <= 0.999


def test_bad_schedule_names_and_sizes_are_rejected():
    with pytest.raises(ValueError, match="unknown noise schedule 'cosin'"):
        NoiseSchedule.from_name("cosin")
    with pytest.raises(ValueError, match="timesteps"):
        NoiseSchedule.from_name("linear", timesteps=1)


def test_q_sample_has_closed_form_mean_and_variance():
    s = NoiseSchedule.from_name("linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7)
    t = torch.full((200_000,), 300)
    x_t = s.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    a = s.alphas_cumprod[300].item()
    assert x_t.mean().item() == pytest.approx(a**0.5 * 0.7, abs=5e-3)
    assert x_t.var().item() == pytest.approx(1 - a, rel=1e-2)
    mean, var = s.q_mean_variance(x0[:2], t[:2])
    assert mean[0].item() == pytest.approx(a**0.5 * 0.7, rel=1e-6)
    assert var[0].item() == pytest.approx(1 - a, rel=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_sample_matches_iterating_the_single_step_chain(name):
    s = NoiseSchedule.from_name(name, timesteps=100)
    g = torch.Generator().manual_seed(1)
    x0 = 0.5 + 0.3 * torch.randn(20_000, 1, generator=g, dtype=torch.float64)
    x = x0.clone()
    for t in range(60):
        x = s.q_step(x, torch.full((x.shape[0],), t), torch.randn(x.shape, generator=g, dtype=torch.float64))
    direct = s.q_sample(
        x0, torch.full((x0.shape[0],), 59), torch.randn(x0.shape, generator=g, dtype=torch.float64)
    )
    assert x.mean().item() == pytest.approx(direct.mean().item(), abs=0.015)
    assert x.std().item() == pytest.approx(direct.std().item(), rel=0.03)


def test_posterior_matches_bayes_rule():
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): precisions add, means combine by precision."""
    s = NoiseSchedule.from_name("cosine")
    x0, x_t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for t in [1, 10, 500, 999]:
        tt = torch.full((5,), t)
        beta, alpha, a_prev = s.betas[t], s.alphas[t], s.alphas_cumprod[t - 1]
        precision = 1 / (1 - a_prev) + alpha / beta
        mean_expected = (a_prev.sqrt() * x0 / (1 - a_prev) + alpha.sqrt() * x_t / beta) / precision
        mean, var, log_var = s.q_posterior(x0, x_t, tt)
        torch.testing.assert_close(mean, mean_expected)
        torch.testing.assert_close(var, torch.full_like(var, 1 / precision.item()))
        torch.testing.assert_close(log_var, var.log())
    # At t=0 the posterior is the data itself: zero variance, mean x_0.
    mean, var, _ = s.q_posterior(x0, x_t, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert bool((var == 0).all())


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
def test_prediction_conversions_round_trip(prediction_type):
    s = NoiseSchedule.from_name("cosine")
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 50, 300, 600, 900, 990, 999])
    x_t = s.q_sample(x0, t, eps)
    target = s.training_target(x0, t, eps, prediction_type)
    x0_hat, eps_hat = s.to_x0_and_eps(target, x_t, t, prediction_type)
    # ε from x0 divides by √(1-ᾱ), tiny at t=0, so compare ε where it is well conditioned.
    torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(eps_hat[1:], eps[1:], rtol=1e-6, atol=1e-5)


def test_unknown_prediction_type_is_named():
    s = NoiseSchedule.from_name("linear", timesteps=10)
    with pytest.raises(ValueError, match="unknown prediction_type 'eps'"):
        s.training_target(torch.zeros(1), torch.zeros(1, dtype=torch.long), torch.zeros(1), "eps")


def test_tables_follow_the_input_dtype_and_device():
    s = NoiseSchedule.from_name("linear")
    x = torch.zeros(3, 1, dtype=torch.float32)
    out = s.q_sample(x, torch.tensor([0, 10, 999]), torch.ones_like(x))
    assert out.dtype == torch.float32
    assert out[2].item() == pytest.approx((1 - s.alphas_cumprod[999].item()) ** 0.5, rel=1e-6)
