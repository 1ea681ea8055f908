"""The continuous core: every sampler, written once on D(x, σ), drives the exact denoiser of known data to that
data's moments; the VP formulation turns an ε/x0/v network into that same D; the Karras grid and churn work."""

import json
import math
import re

import pytest
import torch
from analytic import GaussianMixtureDenoiser, MixtureDenoiserOfSigma
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from difflab.diffusion import (
    DDIM,
    DDPM,
    VP,
    DDIMSampler,
    DDPMSampler,
    DPMSolverPP,
    Euler,
    Heun,
    HeunSampler,
    NoiseSchedule,
    SampleGenerators,
    karras_sigmas,
)
from difflab.diffusion.samplers import continuous
from difflab.generation.sampler import bound_sampler

MEANS, STDS, WEIGHTS = [-0.5, 0.5], [0.15, 0.15], [0.3, 0.7]
N, D = 4000, 4  # the component weight's standard error is about 0.007


def mixture_stats(x):
    """Mean, variance and the weight of the positive component (the components are well separated)."""
    return x.mean().item(), x.var().item(), (x.mean(1) > 0).float().mean().item()


# (core sampler, steps on a Karras grid): enough steps that the discretisation error is below the sampling error
# (the ODE samplers shrink or stretch the components' spread at fewer steps: Heun at 18 steps gives +8%).
CORE_SAMPLERS = {
    "ddpm": (DDPM(), 200),
    "ddim_eta0": (DDIM(0.0), 200),
    "ddim_eta1": (DDIM(1.0), 200),
    "euler": (Euler(), 200),
    "heun": (Heun(), 50),
    "heun_churn": (Heun(s_churn=40, s_tmin=0.05, s_tmax=50), 50),
    "dpm++2m": (DPMSolverPP(), 50),
}


@pytest.mark.parametrize("name", CORE_SAMPLERS)
def test_every_core_sampler_drives_the_exact_denoiser_to_the_data(name):
    sampler, steps = CORE_SAMPLERS[name]
    denoiser = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    sigmas = karras_sigmas(steps, sigma_min=0.002, sigma_max=80.0)
    g = torch.Generator().manual_seed(0)
    x = sigmas[0].item() * torch.randn(N, D, generator=g)
    mean, var, weight = mixture_stats(sampler.sample(denoiser, x, sigmas, generator=g))
    true_mean, true_var, true_weight = denoiser.moments()
    assert mean == pytest.approx(true_mean, abs=0.02)
    assert var == pytest.approx(true_var, rel=0.05)
    assert weight == pytest.approx(true_weight, abs=0.025)


def test_karras_grid_is_rho_spaced_from_sigma_max_to_sigma_min_then_zero():
    sigmas = karras_sigmas(5, sigma_min=0.002, sigma_max=80.0)
    assert sigmas.tolist()[-1] == 0.0 and len(sigmas) == 6
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    roots = sigmas[:-1] ** (1 / 7)
    torch.testing.assert_close(roots.diff(), roots.diff()[:1].expand(4))  # evenly spaced in σ^(1/ρ)


def test_heun_churn_adds_noise_only_inside_its_sigma_window_and_costs_no_extra_calls():
    sigmas = karras_sigmas(10, sigma_min=0.002, sigma_max=80.0)
    x = sigmas[0].item() * torch.randn(8, D, generator=torch.Generator().manual_seed(1))
    plain = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    Heun().sample(plain, x, sigmas)
    churned = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    Heun(s_churn=10, s_tmin=0.05, s_tmax=1.0).sample(churned, x, sigmas, generator=torch.Generator())
    assert len(churned.sigmas_seen) == len(plain.sigmas_seen) == Heun().nfe(10) == 19
    raised = [b > a * (1 + 1e-6) for a, b in zip(plain.sigmas_seen, churned.sigmas_seen, strict=True)]
    # Step k calls D at σ̂_k = σ_k(1 + γ) (call 2k), raised exactly where 0.05 ≤ σ_k ≤ 1, then at σ_{k+1}
    # (call 2k + 1), never raised.
    grid = sigmas.tolist()
    assert [raised[2 * k] for k in range(10)] == [0.05 <= grid[k] <= 1.0 for k in range(10)]
    assert any(raised) and not any(raised[1::2])


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
def test_the_vp_formulation_turns_a_network_of_any_prediction_type_into_the_exact_denoiser(prediction_type):
    schedule = NoiseSchedule.from_name("cosine")
    eps_net = GaussianMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)

    def net(x_t, t):  # the same exact network, asked for another target
        eps = eps_net(x_t, t)
        x0 = schedule.predict_x0_from_eps(x_t, t, eps)
        return schedule.training_target(x0, t, eps, prediction_type)

    vp = VP(schedule)
    denoiser = vp.denoiser(net, prediction_type, clip_x0=None)
    exact = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t in (0, 10, 300, 700, 990):
        sigma = torch.full((64,), vp.sigma(t), dtype=torch.float64)
        x_ve = x * math.sqrt(1 + vp.sigma(t) ** 2)  # the VP point x_t = α_t x_ve of the same noise
        torch.testing.assert_close(denoiser(x_ve, sigma), exact(x_ve, sigma), rtol=1e-6, atol=1e-6)


def test_vp_sigma_and_alpha_are_the_schedules_tables():
    schedule = NoiseSchedule.from_name("linear")
    vp = VP(schedule)
    ac = schedule.alphas_cumprod
    for t in (0, 500, 999):
        assert vp.sigma(t) == pytest.approx(math.sqrt((1 - ac[t].item()) / ac[t].item()), rel=1e-12)
        assert 1 / math.sqrt(1 + vp.sigma(t) ** 2) == pytest.approx(math.sqrt(ac[t].item()), rel=1e-12)
    assert vp.sigma(-1) == 0.0
    sigmas = torch.tensor([vp.sigma(t) for t in (0, 17, 999)], dtype=torch.float32)
    assert vp.timestep_of(sigmas).tolist() == [0, 17, 999]


def test_karras_timesteps_run_from_the_noisiest_to_the_cleanest_and_crowd_the_low_noise_end():
    sampler = DDIMSampler(NoiseSchedule.from_name("linear"), steps=20, timestep_spacing="karras")
    ts = sampler.timesteps.tolist()
    assert ts[0] == 999 and ts[-1] == 0 and ts == sorted(set(ts), reverse=True) and len(ts) == 20
    gaps = [a - b for a, b in zip(ts, ts[1:], strict=False)]
    assert gaps[0] > 5 * gaps[-1]  # ρ = 7 takes small steps where the noise is low


def test_the_karras_grid_samples_a_vp_model_as_well_as_the_default_grid():
    schedule = NoiseSchedule.from_name("linear")
    model = GaussianMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)
    x = DDIMSampler(schedule, steps=50, timestep_spacing="karras").sample(
        model, (N, D), generator=torch.Generator().manual_seed(3)
    )
    mean, var, weight = mixture_stats(x)
    true_mean, true_var, true_weight = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS).moments()
    assert mean == pytest.approx(true_mean, abs=0.02)
    assert var == pytest.approx(true_var, rel=0.08)
    assert weight == pytest.approx(true_weight, abs=0.025)


def test_a_churned_heun_sample_depends_only_on_its_seed_and_index():
    schedule = NoiseSchedule.from_name("linear")
    model = GaussianMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)
    sampler = HeunSampler(schedule, steps=8, s_churn=20)
    both = sampler.sample(model, (4, D), generator=SampleGenerators(7, [0, 1, 2, 3]))
    alone = sampler.sample(model, (2, D), generator=SampleGenerators(7, [2, 3]))
    torch.testing.assert_close(both[2:], alone)
    again = HeunSampler(schedule, steps=8).sample(model, (4, D), generator=SampleGenerators(7, [0, 1, 2, 3]))
    assert not torch.allclose(both, again)  # the churn's noise changed the samples


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Heun(s_churn=-1), "s_churn must be a finite number >= 0"),
        (lambda: Heun(s_tmin=2, s_tmax=1), "s_tmax must be >= s_tmin"),
        (lambda: karras_sigmas(10, 1.0, 0.5), "need 0 < sigma_min < sigma_max"),
        (lambda: DDIMSampler(NoiseSchedule.from_name("linear"), timestep_spacing="karas"), "choose one of"),
        (lambda: Euler().sample(lambda x, s: x, torch.zeros(1, 1), [1.0, 2.0, 0.0]), "strictly decreasing"),
    ],
)
def test_bad_core_settings_are_one_line_errors(make, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        make()
    assert "\n" not in str(error.value)


def test_the_documented_example_samples_gaussian_data():
    example = re.search(r"Example.*?:\n\n(.*?)\n\"\"\"", continuous.__doc__ + '\n"""', re.S).group(1)
    scope: dict = {}
    exec(compile("\n".join(line[4:] for line in example.splitlines()), "example", "exec"), scope)
    assert scope["x0"].mean().item() == pytest.approx(0.3, abs=0.02)
    assert scope["x0"].std().item() == pytest.approx(0.5, rel=0.03)


def test_the_heun_config_offers_churn_and_every_sampler_config_takes_the_karras_grid(tmp_path):
    schedule = NoiseSchedule.from_name("linear")
    model = GaussianMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)
    x_T = torch.randn(8, D, generator=torch.Generator().manual_seed(0))
    runs = []
    for churn in ("0", "30"):
        cfg = compose_config("sample", ["sampler=heun", f"sampler.s_churn={churn}"], tmp_path)
        sampler = bound_sampler(instantiate(cfg.sampler), schedule, "epsilon", latent=False)
        runs.append(sampler.sample(model, (8, D), generator=torch.Generator().manual_seed(1), x_T=x_T))
    assert not torch.allclose(runs[0], runs[1])  # churn's fresh noise moved the samples
    for name in ("ddpm", "ddim", "dpm_solver", "euler", "heun"):
        cfg = compose_config(
            "sample", [f"sampler={name}", "sampler.steps=10", "sampler.timestep_spacing=karras"], tmp_path
        )
        sampler = bound_sampler(instantiate(cfg.sampler), schedule, "epsilon", latent=False)
        assert sampler.timesteps.tolist()[0] == 999 and sampler.timesteps.tolist()[-1] == 0


def test_a_bfloat16_model_runs_at_exactly_the_timesteps_of_its_grid():
    schedule = NoiseSchedule.from_name("linear")
    seen = []

    def net(x_t, t):
        seen.extend(t[:1].tolist())
        return torch.zeros_like(x_t)

    sampler = DDIMSampler(schedule, steps=50)
    sampler.sample(net, (2, D), x_T=torch.zeros(2, D, dtype=torch.bfloat16))
    assert seen == sampler.timesteps.tolist()


def test_a_churned_heun_face_runs_the_network_only_at_its_schedules_noise_levels():
    schedule = NoiseSchedule.from_name("linear")
    vp = VP(schedule)
    sampler = HeunSampler(schedule, steps=10, s_churn=30)
    denoiser = sampler.denoiser(GaussianMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS))
    levels = []

    def recording(x, sigma):
        levels.append(float(sigma[0]))
        return denoiser(x, sigma)

    grid = vp.sigma_grid(sampler.timesteps)
    sampler.core.sample(recording, torch.zeros(4, D), grid, generator=torch.Generator().manual_seed(0))
    trained = set(vp.sigmas.float().tolist())  # σ reaches D in float32
    assert len(levels) == sampler.nfe == 19 and all(level in trained for level in levels)
    off_grid = set(levels) - set(torch.tensor(grid).float().tolist())
    assert off_grid  # churn raised σ, to trained levels between the grid's


# Not t=10: there diffusers' float32 β = 1 − ᾱ_t/ᾱ_{t−1} is 2.7e-5 off a float64 step (measured), difflab's 1.8e-7.
@pytest.mark.parametrize("t", [999, 500, 100])
def test_ddpm_fixed_large_steps_as_diffusers_does(t):
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule.from_name("linear")
    model = GaussianMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(0))
    ref = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, variance_type="fixed_large"
    )
    ref.set_timesteps(1000)
    out = model(x, torch.full((8,), t))
    expected = ref.step(out, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
    ours = DDPMSampler(schedule, variance_type="fixed_large", clip_x0=None)
    got = ours.step(model, x, t, t - 1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_heun_config_writes_as_strict_json(tmp_path):
    cfg = compose_config("sample", ["sampler=heun"], tmp_path)
    json.dumps(OmegaConf.to_container(cfg.sampler), allow_nan=False)  # settings.json must not hold Infinity
    sampler = bound_sampler(
        instantiate(cfg.sampler), NoiseSchedule.from_name("linear"), "epsilon", latent=False
    )
    assert sampler.core.s_tmax == math.inf  # null: no upper bound on the churn window
