"""Cross-check against a reference no one here wrote: Hugging Face diffusers' schedulers (test-only).

Where the definitions coincide the results agree to 1e-5. Deliberate differences (documented in the
README): difflab's reduced-step samplers step to the next timestep of their own grid (diffusers' DDIM uses
t - T//steps, which differs only for "linspace"), and difflab computes its tables in float64.
"""

import pytest
import torch
from analytic import GaussianMixtureDenoiser

from difflab.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, NoiseSchedule

diffusers = pytest.importorskip("diffusers")
LINEAR = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


def mixture(s):
    return GaussianMixtureDenoiser(s, [-0.5, 0.5], [0.15, 0.15], [0.3, 0.7])


def start_noise():
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("name", "theirs"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_alphas_cumprod_match(name, theirs):
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs).alphas_cumprod
    torch.testing.assert_close(
        NoiseSchedule.from_name(name).alphas_cumprod.float(), ref, rtol=1e-5, atol=1e-5
    )


# Not t=1: there 1-ᾱ_t ≈ 2e-4 and diffusers' float32 ᾱ loses ~4 digits to cancellation (measured
# difference 1.1e-4); difflab's float64 tables do not.
@pytest.mark.parametrize("t", [999, 500, 100, 10])
def test_one_ddpm_step_matches(t):
    s = NoiseSchedule.from_name("linear")
    model, x = mixture(s), start_noise()
    ref = diffusers.DDPMScheduler(**LINEAR, clip_sample=False, variance_type="fixed_small")
    ref.set_timesteps(1000)
    expected = ref.step(
        model(x, torch.full((8,), t)), t, x, generator=torch.Generator().manual_seed(3)
    ).prev_sample
    ours = DDPMSampler(s, clip_x0=None)
    got = ours.step(model, x, t, t - 1, torch.Generator().manual_seed(3))  # the same noise draw
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ddim_trajectory_matches():
    s = NoiseSchedule.from_name("linear")
    model, x = mixture(s), start_noise()
    ref = diffusers.DDIMScheduler(
        **LINEAR, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading"
    )
    ref.set_timesteps(50)
    ours = DDIMSampler(s, steps=50, eta=0.0, clip_x0=None)
    assert ours.timesteps.tolist() == ref.timesteps.tolist()
    expected = x.clone()
    for t in ref.timesteps:  # one step at a time, each compared
        expected = ref.step(model(expected, t.expand(8)), t, expected, eta=0.0).prev_sample
    got = ours.sample(model, (8, 4), x_T=x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_dpm_solver_pp_2m_trajectory_matches():
    s = NoiseSchedule.from_name("linear")
    model, x = mixture(s), start_noise()
    ref = diffusers.DPMSolverMultistepScheduler(
        **LINEAR,
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    ref.set_timesteps(20)
    ours = DPMSolverSampler(s, steps=20, clip_x0=None)
    x_ref, x_ours = x.clone(), x.clone()
    ts = ref.timesteps.tolist()
    state = {}  # what the multistep solver remembers between steps
    for t, t_prev in zip(ts, [*ts[1:], -1], strict=True):  # step by step on diffusers' own grid
        x_ref = ref.step(model(x_ref, torch.full((8,), t)), t, x_ref).prev_sample
        x_ours = ours.step(model, x_ours, t, t_prev, state=state)
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.denoise(model, x.clone(), ref.timesteps), x_ref, rtol=1e-5, atol=1e-5)
