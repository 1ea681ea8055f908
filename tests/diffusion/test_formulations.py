"""Formulations against closed forms: EDM's preconditioning and λ(σ), min-SNR-γ in each target's form, the flow
path and its velocity, zero terminal SNR and offset noise, and the exact denoiser of a Gaussian mixture written in
each formulation's parameterisation driving the core samplers to the mixture's moments."""

import math

import pytest
import torch
from analytic import MixtureDenoiserOfSigma

from difflab.diffusion import (
    DDIMSampler,
    DiffusionLoss,
    DPMSolverPP,
    DPMSolverSampler,
    Euler,
    Heun,
    HeunSampler,
    NoiseSchedule,
)
from difflab.diffusion.formulations import (
    EDM,
    Flow,
    VPTraining,
    edm_weight,
    min_snr_weight,
    rescale_zero_terminal_snr,
)
from difflab.diffusion.formulations.flow import shift_time
from difflab.diffusion.formulations.timestep_face import EpsilonFace, sampling_view, table_schedule

MEANS, STDS, WEIGHTS = [-0.5, 0.5], [0.15, 0.15], [0.3, 0.7]
N, D = 4000, 4


def test_edm_preconditioning_is_the_papers_table_1():
    edm = EDM(sigma_data=0.5)
    c_skip, c_out, c_in, c_noise = edm.preconditioning(torch.tensor([1.0, 0.002, 80.0], dtype=torch.float64))
    # at σ = 1, σ_data = 0.5: σ² + σ_data² = 1.25
    assert c_skip[0].item() == pytest.approx(0.25 / 1.25)
    assert c_out[0].item() == pytest.approx(0.5 / math.sqrt(1.25))
    assert c_in[0].item() == pytest.approx(1 / math.sqrt(1.25))
    assert c_noise[0].item() == pytest.approx(0.0)
    assert c_noise[1].item() == pytest.approx(math.log(0.002) / 4)
    # D → x as σ → 0 and D → 0·x + σ_data·F as σ → ∞ (the network's output is the answer)
    assert c_skip[1].item() == pytest.approx(1.0, abs=1e-4) and c_out[1].item() == pytest.approx(
        0.002, rel=1e-4
    )
    assert c_out[2].item() == pytest.approx(0.5, rel=1e-4) and c_skip[2].item() == pytest.approx(
        0.25 / 6400.25
    )


def test_edm_lambda_is_the_closed_form_and_makes_the_networks_loss_unweighted():
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0], dtype=torch.float64)
    lam = edm_weight(sigma, 0.5)
    torch.testing.assert_close(lam, (sigma**2 + 0.25) / (sigma * 0.5) ** 2)
    x0 = torch.randn(5, 3, dtype=torch.float64)
    noise = torch.randn(5, 3, dtype=torch.float64)
    x_in, c_noise, target, weight = EDM(sigma_data=0.5).training_example(x0, sigma, noise)
    torch.testing.assert_close(weight, torch.ones_like(sigma))  # λ c_out² = 1
    # a network that outputs its target makes D(x, σ) = x_0 exactly
    c_skip, c_out, c_in, _ = EDM(sigma_data=0.5).preconditioning(sigma)
    x = x0 + sigma[:, None] * noise
    torch.testing.assert_close(x_in, c_in[:, None] * x)
    torch.testing.assert_close(c_skip[:, None] * x + c_out[:, None] * target, x0)
    torch.testing.assert_close(c_noise, sigma.log() / 4)


def test_edm_draws_log_normal_training_sigmas():
    sigma = EDM(p_mean=-1.2, p_std=1.2).draw_sigma(
        200_000, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.01)
    assert sigma.log().std().item() == pytest.approx(1.2, abs=0.01)


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weights_are_the_closed_forms(gamma):
    snr = torch.tensor([0.01, 0.5, 1.0, 5.0, 100.0], dtype=torch.float64)
    clamped = torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64))
    torch.testing.assert_close(min_snr_weight(snr, gamma, "epsilon"), clamped / snr)
    torch.testing.assert_close(min_snr_weight(snr, gamma, "x0"), clamped)
    torch.testing.assert_close(min_snr_weight(snr, gamma, "v"), clamped / (snr + 1))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_min_snr_on_eps_or_v_is_min_snr_gamma_on_the_x0_error(prediction_type):
    """The derivation in weighting.py: w_target‖ŷ − y‖² equals min(SNR, γ)‖x̂_0 − x_0‖² for any wrong ŷ."""
    schedule = NoiseSchedule.from_name("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([5, 200, 500, 900, 999])
    x0, eps, wrong = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    x_t = schedule.q_sample(x0, t, eps)
    target = schedule.training_target(x0, t, eps, prediction_type)
    x0_hat, _ = schedule.to_x0_and_eps(wrong, x_t, t, prediction_type)
    a = schedule.alphas_cumprod[t]
    snr = a / (1 - a)
    w = min_snr_weight(snr, 5.0, prediction_type)
    torch.testing.assert_close(
        w * ((wrong - target) ** 2).sum(1), snr.clamp(max=5.0) * ((x0_hat - x0) ** 2).sum(1)
    )


def test_flow_path_runs_from_data_to_noise_with_velocity_noise_minus_data():
    flow = Flow()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 2, 4, generator=g, dtype=torch.float64)
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x_t, time, _ = flow.training_example(x0, ends, noise)
    torch.testing.assert_close(x_t[0], x0[0])  # t = 0: the data
    torch.testing.assert_close(x_t[1], noise[1])  # t = 1: pure noise
    torch.testing.assert_close(time, ends * 1000)
    # the target is dx_t/dt, by a central difference
    t, h = torch.tensor([0.3, 0.3], dtype=torch.float64), 1e-4
    ahead, _, velocity = flow.training_example(x0, t + h, noise)
    behind, _, _ = flow.training_example(x0, t - h, noise)
    torch.testing.assert_close((ahead - behind) / (2 * h), velocity)
    torch.testing.assert_close(velocity, noise - x0)


def test_the_flow_denoiser_on_the_ve_scale_returns_the_data_for_the_true_velocity():
    flow = Flow()
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    x_t, _, _ = flow.training_example(x0, t, noise)
    sigma = t / (1 - t)
    x_ve = x_t / (1 - t)[:, None]
    torch.testing.assert_close(x_ve, x0 + sigma[:, None] * noise)  # σ = t/(1-t), x = x_t/(1-t)
    calls = []

    def true_velocity(x_in, time):
        calls.append(time)
        return noise - x0

    torch.testing.assert_close(flow.denoiser(true_velocity)(x_ve, sigma), x0)
    torch.testing.assert_close(calls[0], t * 1000)


def test_flow_time_distributions_and_shift():
    cpu, g = torch.device("cpu"), torch.Generator().manual_seed(0)
    t = Flow(t_sampling="logit_normal", logit_mean=0.5, logit_std=0.8).draw_t(200_000, cpu, g)
    logit = (t / (1 - t)).log()
    assert logit.mean().item() == pytest.approx(0.5, abs=0.01) and logit.std().item() == pytest.approx(
        0.8, abs=0.01
    )
    u = Flow(t_sampling="uniform").draw_t(200_000, cpu, g)
    assert u.min() >= 0 and u.max() <= 1 and u.mean().item() == pytest.approx(0.5, abs=0.01)
    mode = Flow(t_sampling="mode", mode_scale=1.29).draw_t(200_000, cpu, g)
    assert mode.min() >= 0 and mode.max() <= 1
    # SD3's mode sampling with s > 0 puts more mass in the middle than uniform
    assert ((mode - 0.5).abs() < 0.25).float().mean() > ((u - 0.5).abs() < 0.25).float().mean() + 0.05
    torch.testing.assert_close(shift_time(torch.tensor([0.0, 0.5, 1.0]), 3.0), torch.tensor([0.0, 0.75, 1.0]))
    shifted = Flow(t_sampling="uniform", shift=3.0).draw_t(200_000, cpu, g)
    assert shifted.mean() > u.mean() + 0.1


def test_flow_grid_is_uniform_in_t_and_shifted_on_request():
    sigmas = Flow(t_max=0.9).sigmas(3)
    torch.testing.assert_close(sigmas / (1 + sigmas), torch.tensor([0.9, 0.6, 0.3, 0.0], dtype=torch.float64))
    shifted = Flow(t_max=0.9, shift=2.0).sigmas(3)
    t = torch.tensor([0.9, 0.6, 0.3, 0.0], dtype=torch.float64)
    torch.testing.assert_close(shifted / (1 + shifted), 2 * t / (1 + t))


def test_edm_grid_is_karras_rho_7_between_sigma_min_and_sigma_max():
    sigmas = EDM(sigma_min=0.002, sigma_max=80.0).sigmas(18)
    assert len(sigmas) == 19 and sigmas[-1].item() == 0.0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    roots = sigmas[:-1] ** (1 / 7)
    torch.testing.assert_close(roots.diff(), roots.diff()[:1].expand(17))


def edm_network_of(exact: MixtureDenoiserOfSigma, edm: EDM):
    """F(c_in x, c_noise) = (D(x, σ) − c_skip x)/c_out for the exact D: the ideal EDM network."""

    def net(x_in, c_noise):
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = edm.preconditioning(sigma)
        x = x_in / c_in[:, None]
        return (exact(x, sigma) - c_skip[:, None] * x) / c_out[:, None]

    return net


def flow_network_of(exact: MixtureDenoiserOfSigma):
    """v(x_t, 1000 t) = (x_t − D(x_t/(1−t), t/(1−t)))/t for the exact D: the ideal velocity network."""

    def net(x_t, time):
        t = time / 1000
        return (x_t - exact(x_t / (1 - t)[:, None], t / (1 - t))) / t[:, None]

    return net


def mixture_stats(x):
    return x.mean().item(), x.var().item(), (x.mean(1) > 0).float().mean().item()


SAMPLERS = {"euler": (Euler(), 200), "heun": (Heun(), 50), "dpm++2m": (DPMSolverPP(), 50)}


@pytest.mark.parametrize("formulation", ["edm", "flow"])
@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_the_exact_mixture_in_each_parameterisation_samples_to_its_moments(formulation, sampler_name):
    sampler, steps = SAMPLERS[sampler_name]
    exact = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    g = torch.Generator().manual_seed(0)
    start = torch.randn(N, D, generator=g, dtype=torch.float64)
    if formulation == "edm":
        edm = EDM()
        denoiser, sigmas = edm.denoiser(edm_network_of(exact, edm)), edm.sigmas(steps)
        x = sigmas[0].item() * start
    else:
        flow = Flow(t_max=0.999)
        denoiser, sigmas = flow.denoiser(flow_network_of(exact)), flow.sigmas(steps)
        x = start / (1 - 0.999)  # x_t = ε at t_max, on the VE scale
    mean, var, weight = mixture_stats(sampler.sample(denoiser, x, sigmas, generator=g))
    true_mean, true_var, true_weight = exact.moments()
    assert mean == pytest.approx(true_mean, abs=0.02)
    assert var == pytest.approx(true_var, rel=0.05)
    assert weight == pytest.approx(true_weight, abs=0.025)


# Each formulation's own grid: EDM's ρ grid (karras), flow's uniform t (trailing: from the top of the table).
FACES = {
    "ddim": lambda s, spacing: DDIMSampler(s, steps=100, timestep_spacing="trailing"),
    "heun": lambda s, spacing: HeunSampler(s, steps=40, timestep_spacing=spacing),
    "dpm_solver": lambda s, spacing: DPMSolverSampler(s, steps=40, timestep_spacing=spacing),
}


@pytest.mark.parametrize("formulation", ["edm", "flow"])
@pytest.mark.parametrize("face", FACES)
def test_the_timestep_face_of_an_edm_or_flow_network_samples_the_mixture(formulation, face):
    """What sample.py, evaluate.py, difflab.load and the callbacks run for an EDM or flow checkpoint."""
    exact = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    if formulation == "edm":
        f = EDM()
        net = edm_network_of(exact, f)
    else:
        f = Flow(shift=2.0)
        net = flow_network_of(exact)
    face_net, schedule, prediction_type = sampling_view(net, None, "v", f)
    assert isinstance(face_net, EpsilonFace) and prediction_type == "epsilon"
    levels = ((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod).sqrt()
    assert levels[0] < 0.01 and levels[-1] >= f.sigmas(1)[0].item() * (1 - 1e-6)  # the formulation's range
    sampler = FACES[face](schedule, "karras" if formulation == "edm" else "trailing")
    samples = sampler.sample(face_net, (N, D), generator=torch.Generator().manual_seed(0))
    mean, var, weight = mixture_stats(samples.double())
    true_mean, true_var, true_weight = exact.moments()
    assert mean == pytest.approx(true_mean, abs=0.02)
    assert var == pytest.approx(true_var, rel=0.05)
    assert weight == pytest.approx(true_weight, abs=0.025)


def test_the_tables_span_each_formulations_own_noise_levels():
    edm_levels = table_schedule(EDM(sigma_min=0.002, sigma_max=80.0)).alphas_cumprod
    sigmas = ((1 - edm_levels) / edm_levels).sqrt()
    assert sigmas[0].item() == pytest.approx(0.002) and sigmas[-1].item() == pytest.approx(80.0)
    flow_levels = table_schedule(Flow(t_max=0.999)).alphas_cumprod
    t = ((1 - flow_levels) / flow_levels).sqrt()
    t = t / (1 + t)
    torch.testing.assert_close(t, torch.arange(1, 1001, dtype=torch.float64) / 1000 * 0.999)


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
def test_vp_training_with_defaults_is_todays_loss_draw_for_draw(prediction_type):
    schedule = NoiseSchedule.from_name("linear", 1000)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    x0 = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(3))

    def model(x_t, t):
        return net(x_t) * (1 + t.float()[:, None, None, None] / 1000)

    today = DiffusionLoss(schedule, prediction_type)(model, x0, generator=torch.Generator().manual_seed(0))
    vp = VPTraining(schedule, prediction_type).loss(model, x0, generator=torch.Generator().manual_seed(0))
    assert vp.item() == today.item()


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
def test_vp_min_snr_weights_each_samples_error_by_its_target_form(prediction_type):
    schedule = NoiseSchedule.from_name("linear", 1000)
    training = VPTraining(schedule, prediction_type, weighting="min_snr", min_snr_gamma=5.0)
    x0 = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = {}

    def model(x_t, t):
        seen["t"] = t
        return torch.zeros_like(x_t)

    loss = training.loss(model, x0, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # redraw what the loss drew: t, then ε
    t = torch.randint(0, 1000, (64,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    target = schedule.training_target(x0, t, eps, prediction_type).float()
    a = schedule.alphas_cumprod[t].float()
    w = min_snr_weight(a / (1 - a), 5.0, prediction_type)
    expected = (w[:, None, None, None] * target**2).mean()
    assert torch.equal(seen["t"], t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_offset_noise_shifts_each_samples_channel_mean():
    schedule = NoiseSchedule.from_name("linear", 1000)
    x0 = torch.zeros(256, 3, 16, 16)
    means = {}
    for offset in (0.0, 0.5):

        def model(x_t, t, offset=offset):
            means[offset] = x_t.mean((2, 3))
            return torch.zeros_like(x_t)

        VPTraining(schedule, offset_noise=offset).loss(model, x0, generator=torch.Generator().manual_seed(0))
    spread = {k: v.std().item() for k, v in means.items()}
    assert spread[0.0] < 0.1 and spread[0.5] > 0.25  # per-image, per-channel brightness now varies


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_zero_terminal_snr_keeps_the_first_level_and_ends_in_almost_pure_noise(name):
    schedule = NoiseSchedule.from_name(name, 1000)
    rescaled = rescale_zero_terminal_snr(schedule)
    ac = rescaled.alphas_cumprod
    assert ac[0].item() == pytest.approx(schedule.alphas_cumprod[0].item())
    assert ac[-1].item() == pytest.approx(min(2**-24, ac[-2].item() / 2))  # SNR_T ≤ 6e-8 (Lin et al.: 0)
    assert ac[-1].item() < schedule.alphas_cumprod[-1].item() or ac[-1].item() == pytest.approx(2**-24)
    assert bool((ac.diff() < 0).all())
    assert VPTraining(schedule, zero_terminal_snr=True).schedule.alphas_cumprod[-1].item() == ac[-1].item()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EDM(sigma_data=0), "sigma_data must be > 0 (got 0)"),
        (lambda: EDM(p_std=-1), "p_std must be > 0 (got -1)"),
        (lambda: EDM(weighting="snr"), "unknown weighting 'snr' for formulation=edm; choose one of edm"),
        (lambda: EDM(weighting="min_snr", min_snr_gamma=0), "min_snr_gamma must be > 0 (got 0)"),
        (lambda: Flow(logit_std=0), "logit_std must be > 0 (got 0)"),
        (lambda: Flow(shift=0), "shift must be > 0 (got 0)"),
        (lambda: Flow(t_sampling="beta"), "unknown t_sampling 'beta'"),
        (
            lambda: Flow(weighting="min_snr"),
            "unknown weighting 'min_snr' for formulation=flow; choose one of uniform",
        ),
        (lambda: VPTraining(NoiseSchedule.from_name("linear"), weighting="edm"), "for formulation=vp"),
        (
            lambda: VPTraining(NoiseSchedule.from_name("linear"), min_snr_gamma=-1),
            "min_snr_gamma must be > 0",
        ),
        (
            lambda: VPTraining(NoiseSchedule.from_name("linear"), offset_noise=-0.1),
            "offset_noise must be >= 0",
        ),
    ],
)
def test_bad_formulation_values_are_one_line_errors(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_unet_takes_edm_and_flow_float_times_and_integer_timesteps_keep_their_numbers():
    from difflab.models import UNet

    torch.manual_seed(0)
    net = UNet(1, image_size=8, base_channels=8, channel_mults=[1, 2], num_groups=4, attention_resolutions=[])
    for conv in [net.conv_out, *(m.conv2 for m in net.modules() if hasattr(m, "conv2"))]:
        torch.nn.init.normal_(conv.weight, std=0.1)  # zero-initialised: the time would change nothing
    net.eval()
    x = torch.randn(3, 1, 8, 8)
    steps = torch.tensor([0, 500, 999])
    torch.testing.assert_close(net(x, steps), net(x, steps.float()), rtol=0, atol=0)  # VP's numbers
    edm_times = torch.tensor([math.log(0.002), 0.0, math.log(80.0)]) / 4  # c_noise
    out = net(x, edm_times)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    same_x = x[:1].expand(3, -1, -1, -1)
    by_time = net(same_x, edm_times)
    assert (by_time[0] - by_time[2]).abs().max() > 1e-3  # the embedding tells σ_min from σ_max
