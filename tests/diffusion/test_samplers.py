"""Samplers driven by the exact ε-predictor of known data reproduce that data's distribution."""

import warnings

import pytest
import torch
from analytic import GaussianMixtureDenoiser
from hydra.utils import instantiate

from difflab.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    EulerSampler,
    HeunSampler,
    NoiseSchedule,
    make_timesteps,
)

MEAN, STD = 0.3, 0.5
N, D = 4000, 4  # 16,000 scalar draws: the sample mean's standard error is about 0.004
NO_CLIP = {"clip_x0": None}  # this data reaches beyond [-1, 1], where the default clip_x0=1.0 would cut it


def gaussian(name="linear"):
    s = NoiseSchedule.from_name(name)
    return s, GaussianMixtureDenoiser(s, [MEAN], [STD], [1.0])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_over_all_steps_reproduces_gaussian_data(name):
    s, model = gaussian(name)
    x = DDPMSampler(s, **NO_CLIP).sample(model, (N, D), generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(MEAN, abs=0.02)
    assert x.std().item() == pytest.approx(STD, rel=0.03)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_50_steps_reproduces_gaussian_data(name):
    s, model = gaussian(name)
    x = DDIMSampler(s, steps=50, eta=0.0, **NO_CLIP).sample(
        model, (N, D), generator=torch.Generator().manual_seed(0)
    )
    assert x.mean().item() == pytest.approx(MEAN, abs=0.02)
    # DDIM's discretisation shrinks the spread slightly at 50 steps (measured ≈5% on linear).
    assert x.std().item() == pytest.approx(STD, rel=0.07)


def test_ddim_gets_closer_with_more_steps():
    s, model = gaussian("linear")
    errors = []
    for steps in (10, 50, 250):
        x = DDIMSampler(s, steps=steps, **NO_CLIP).sample(
            model, (N, D), generator=torch.Generator().manual_seed(0)
        )
        errors.append(abs(x.std().item() - STD))
    assert errors[0] > errors[1] > errors[2]


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_not():
    s, model = gaussian()
    x_T = torch.randn(16, D, generator=torch.Generator().manual_seed(3))
    a = DDIMSampler(s, steps=20).sample(model, (16, D), generator=torch.Generator().manual_seed(1), x_T=x_T)
    b = DDIMSampler(s, steps=20).sample(model, (16, D), generator=torch.Generator().manual_seed(2), x_T=x_T)
    torch.testing.assert_close(a, b)
    c = DDIMSampler(s, steps=20, eta=1.0).sample(
        model, (16, D), generator=torch.Generator().manual_seed(1), x_T=x_T
    )
    d = DDIMSampler(s, steps=20, eta=1.0).sample(
        model, (16, D), generator=torch.Generator().manual_seed(2), x_T=x_T
    )
    assert not torch.allclose(c, d)


@pytest.mark.parametrize("sampler_cls", [DDPMSampler, DDIMSampler])
def test_same_generator_seed_gives_same_samples(sampler_cls):
    s, model = gaussian()
    sampler = sampler_cls(s, steps=25)
    a = sampler.sample(model, (8, D), generator=torch.Generator().manual_seed(5))
    b = sampler.sample(model, (8, D), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_samplers_accept_x0_and_v_prediction_models():
    s, eps_model = gaussian()

    def as_type(prediction_type):
        def model(x, t):
            eps = eps_model(x, t)
            x0 = s.predict_x0_from_eps(x, t, eps)
            return s.training_target(x0, t, eps, prediction_type)

        return model

    x_T = torch.randn(64, D, generator=torch.Generator().manual_seed(0))
    ref = DDIMSampler(s, steps=20).sample(eps_model, (64, D), x_T=x_T)
    for prediction_type in ("x0", "v"):
        out = DDIMSampler(s, steps=20, prediction_type=prediction_type).sample(
            as_type(prediction_type), (64, D), x_T=x_T
        )
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [DDPMSampler, DDIMSampler, DPMSolverSampler, EulerSampler, HeunSampler])
def test_clipping_to_the_data_range_is_the_default_and_can_be_turned_off(make):
    s = NoiseSchedule.from_name("linear")

    def wild(x, t):  # an ε-predictor whose implied x̂_0 is far outside [-1, 1]
        return -10 * torch.ones_like(x)

    g = torch.Generator().manual_seed(0)
    x = make(s, steps=10).sample(wild, (4, 3), generator=g)  # the default agrees with conf/sampler/*.yaml
    assert x.abs().max().item() <= 1.0 + 1e-5
    unclipped = make(s, steps=10, clip_x0=None).sample(wild, (4, 3), generator=g)
    assert unclipped.abs().max().item() > 10


def test_timestep_spacings():
    assert make_timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert make_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    lin = make_timesteps(1000, 10, "linspace")
    assert lin[0].item() == 999 and lin[-1].item() == 0 and len(lin) == 10
    assert make_timesteps(1000, 1000, "leading").tolist() == list(range(999, -1, -1))


def test_bad_sampler_settings_are_named():
    s = NoiseSchedule.from_name("linear")
    with pytest.raises(ValueError, match="between 1 and the schedule's 1000"):
        DDIMSampler(s, steps=0)
    with pytest.raises(ValueError, match="unknown timestep_spacing 'lead'"):
        DDIMSampler(s, timestep_spacing="lead")
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(s, eta=-1)
    with pytest.raises(ValueError, match="x_T has shape"):
        DDIMSampler(s).sample(lambda x, t: x, (2, 3), x_T=torch.zeros(2, 4))
    # Before, 2.5 became 2 steps, True 1, "10" was taken, and a schedule's name failed on a missing attribute.
    for steps in (2.5, True, "10"):
        with pytest.raises(ValueError, match=rf"^steps must be a whole number \(got {type(steps).__name__} "):
            DDIMSampler(s, steps=steps)
    with pytest.raises(ValueError, match=r"^schedule must be a NoiseSchedule \(got str 'linear'\)"):
        DDIMSampler("linear", steps=3)


# -- every sampler against a 2-component Gaussian mixture ---------------------------------------------

MIX_MEANS, MIX_STDS, MIX_WEIGHTS = [-0.5, 0.5], [0.15, 0.15], [0.3, 0.7]


def mixture_stats(x):
    """Mean, variance and the weight of the positive component (points are well separated)."""
    return x.mean().item(), x.var().item(), (x.mean(1) > 0).float().mean().item()


def mixture_truth():
    mean = sum(w * m for w, m in zip(MIX_WEIGHTS, MIX_MEANS, strict=True))
    second = sum(w * (s**2 + m**2) for w, m, s in zip(MIX_WEIGHTS, MIX_MEANS, MIX_STDS, strict=True))
    return mean, second - mean**2, MIX_WEIGHTS[1]


# (sampler, relative tolerance on the variance): ODE samplers shrink the spread a little at few steps.
DEFAULT_SAMPLERS = [
    (lambda s: DDPMSampler(s), 0.04),
    (lambda s: DDIMSampler(s), 0.08),
    (lambda s: DPMSolverSampler(s), 0.08),
    (lambda s: EulerSampler(s), 0.08),
    (lambda s: HeunSampler(s), 0.08),
]


@pytest.mark.parametrize(
    ("make", "var_tol"), DEFAULT_SAMPLERS, ids=["ddpm", "ddim", "dpm++", "euler", "heun"]
)
def test_every_sampler_at_its_default_steps_reproduces_a_mixture(make, var_tol):
    s = NoiseSchedule.from_name("linear")
    model = GaussianMixtureDenoiser(s, MIX_MEANS, MIX_STDS, MIX_WEIGHTS)
    mean, var, weight = mixture_stats(
        make(s).sample(model, (N, D), generator=torch.Generator().manual_seed(1))
    )
    true_mean, true_var, true_weight = mixture_truth()
    assert mean == pytest.approx(true_mean, abs=0.02)
    assert var == pytest.approx(true_var, rel=var_tol)
    assert weight == pytest.approx(true_weight, abs=0.02)  # component weights: standard error ≈ 0.007


def test_dpm_solver_at_20_steps_beats_ddim_at_20_steps():
    s = NoiseSchedule.from_name("linear")
    model = GaussianMixtureDenoiser(s, MIX_MEANS, MIX_STDS, MIX_WEIGHTS)
    x_T = torch.randn(N, D, generator=torch.Generator().manual_seed(2))
    _, true_var, _ = mixture_truth()
    err = {}
    for name, sampler in [("ddim", DDIMSampler(s, steps=20)), ("dpm", DPMSolverSampler(s, steps=20))]:
        _, var, _ = mixture_stats(sampler.sample(model, (N, D), x_T=x_T))
        err[name] = abs(var - true_var)
    assert err["dpm"] < err["ddim"]


def test_euler_is_ddim_with_eta_zero_and_heun_costs_two_evaluations_per_step():
    s = NoiseSchedule.from_name("cosine")
    model = GaussianMixtureDenoiser(s, MIX_MEANS, MIX_STDS, MIX_WEIGHTS)
    x_T = torch.randn(64, D, generator=torch.Generator().manual_seed(4))
    euler = EulerSampler(s, steps=30, timestep_spacing="leading").sample(model, (64, D), x_T=x_T)
    ddim = DDIMSampler(s, steps=30, timestep_spacing="leading").sample(model, (64, D), x_T=x_T)
    torch.testing.assert_close(euler, ddim, rtol=1e-4, atol=1e-4)
    calls = []
    heun = HeunSampler(s, steps=10)
    heun.sample(lambda x, t: calls.append(1) or model(x, t), (4, D), x_T=x_T[:4])
    assert len(calls) == heun.nfe == 19


@pytest.mark.parametrize("make", [DDPMSampler, DDIMSampler, DPMSolverSampler, EulerSampler, HeunSampler])
def test_samplers_run_in_float64_and_keep_the_dtype(make):
    s = NoiseSchedule.from_name("linear")
    model = GaussianMixtureDenoiser(s, MIX_MEANS, MIX_STDS, MIX_WEIGHTS)
    x_T = torch.randn(4, D, dtype=torch.float64)
    out = make(s, steps=5).sample(model, (4, D), x_T=x_T)
    assert out.dtype == torch.float64 and out.shape == (4, D)


def test_a_karras_grid_with_fewer_distinct_timesteps_than_steps_says_so():
    # Before, steps=200 walked 193 steps without a word (the log and settings said 200).
    schedule = NoiseSchedule.from_name("linear")
    with pytest.warns(
        UserWarning, match=r"timestep_spacing=karras gives (\d+) distinct timesteps for steps=200"
    ):
        sampler = DDIMSampler(schedule, steps=200, timestep_spacing="karras")
    taken = len(sampler.timesteps)
    assert taken < 200
    # Before, "DDIMSampler(steps=200, …)" in sample.py's header line, and the warning pointed into Hydra's code.
    assert repr(sampler).startswith(f"DDIMSampler(steps={taken} (of 200 asked), ")
    with pytest.warns(UserWarning) as caught:
        instantiate(
            {"_target_": "difflab.diffusion.DDIMSampler", "steps": 200, "timestep_spacing": "karras"},
            schedule,
        )
    assert caught[0].filename.endswith("samplers/base.py")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DDIMSampler(schedule, steps=10, timestep_spacing="karras")  # 10 distinct: nothing to say
