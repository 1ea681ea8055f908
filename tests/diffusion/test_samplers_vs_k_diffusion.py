"""Cross-check against k-diffusion (crowsonkb, test-only): its samplers on the same denoiser and σ grid give the
same samples as difflab's core, and its wrapper of a DDPM ε-network (DiscreteEpsDDPMDenoiser) samples the same
as difflab's integer-timestep face.

Only `k_diffusion.sampling` and `k_diffusion.external` are imported: the package's __init__ also imports its
training stack (scikit-image, kornia, clean-fid, …), which difflab does not install (k-diffusion is installed
with --no-deps plus the small torchdiffeq/torchsde that `sampling` imports).
"""

import importlib
import importlib.util
import sys
import types

import pytest
import torch
from analytic import GaussianMixtureDenoiser, MixtureDenoiserOfSigma

from difflab.diffusion import (
    DDIM,
    DDIMSampler,
    DPMSolverPP,
    DPMSolverSampler,
    Euler,
    EulerSampler,
    Heun,
    HeunSampler,
    NoiseSchedule,
    karras_sigmas,
)


def k_diffusion_module(name: str) -> types.ModuleType:
    """k_diffusion.<name>, imported under an empty stand-in for the package so its __init__ does not run."""
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None:
            pytest.skip(
                "k-diffusion is not installed (pip install --no-deps k-diffusion torchdiffeq torchsde)"
            )
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations or [])
        package.__spec__ = spec
        sys.modules["k_diffusion"] = package
    return importlib.import_module(f"k_diffusion.{name}")


kd = k_diffusion_module("sampling")
MEANS, STDS, WEIGHTS = [-0.5, 0.5], [0.15, 0.15], [0.3, 0.7]
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


def start(sigma_max: float, dtype: torch.dtype, n: int = 64) -> torch.Tensor:
    return sigma_max * torch.randn(n, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)


PAIRS = {  # difflab's core sampler and k-diffusion's function of the same algorithm
    "euler": (Euler(), kd.sample_euler),
    "heun": (Heun(), kd.sample_heun),
    "dpmpp_2m": (DPMSolverPP(), kd.sample_dpmpp_2m),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", PAIRS)
def test_same_samples_as_k_diffusion_on_the_same_denoiser_and_grid(name, dtype):
    ours, theirs = PAIRS[name]
    denoiser = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    sigmas = karras_sigmas(15, sigma_min=0.002, sigma_max=80.0).to(dtype)
    x = start(80.0, dtype)
    expected = theirs(denoiser, x.clone(), sigmas, disable=True)
    torch.testing.assert_close(ours.sample(denoiser, x.clone(), sigmas), expected, **TOLERANCE[dtype])


def test_churned_heun_draws_the_same_noise_as_k_diffusion():
    # k-diffusion draws its churn noise from torch's global generator at every step; with γ > 0 at every step
    # (the default σ window) difflab draws one noise per step too, in the same order, from its own generator.
    denoiser = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    sigmas = karras_sigmas(10, sigma_min=0.002, sigma_max=80.0).float()
    x = start(
        80.0, torch.float32
    )  # difflab draws noise in float32 (the same on every device), as randn_like here
    torch.manual_seed(5)
    expected = kd.sample_heun(denoiser, x.clone(), sigmas, s_churn=5.0, s_noise=1.003, disable=True)
    ours = Heun(s_churn=5.0, s_noise=1.003).sample(
        denoiser, x.clone(), sigmas, generator=torch.Generator().manual_seed(5)
    )
    # Float32 rounding of 10 re-noised steps from σ=80 differs with the CPU's kernels: 1.4e-5 at most on an Intel
    # Xeon, under 1e-5 on an AMD EPYC. Another noise draw would differ by O(1), which this still catches.
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_ddim_eta_is_k_diffusions_euler_ancestral():
    denoiser = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    sigmas = karras_sigmas(12, sigma_min=0.002, sigma_max=80.0).float()
    x = start(80.0, torch.float32)
    theirs_noise = torch.Generator().manual_seed(9)

    def noise_sampler(sigma, sigma_next):
        return torch.randn(x.shape, generator=theirs_noise)

    for eta in (0.5, 1.0):
        theirs_noise.manual_seed(9)
        expected = kd.sample_euler_ancestral(
            denoiser, x.clone(), sigmas, eta=eta, noise_sampler=noise_sampler, disable=True
        )
        ours = DDIM(eta).sample(denoiser, x.clone(), sigmas, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(ours, expected, **TOLERANCE[torch.float32])


FACES = {  # difflab's integer-timestep sampler and k-diffusion's function of the same algorithm
    "euler": (lambda s: EulerSampler(s, steps=25, clip_x0=None), kd.sample_euler),
    "heun": (lambda s: HeunSampler(s, steps=12, clip_x0=None), kd.sample_heun),
    "dpmpp_2m": (lambda s: DPMSolverSampler(s, steps=20, clip_x0=None), kd.sample_dpmpp_2m),
    "ddim_karras": (
        lambda s: DDIMSampler(s, steps=30, timestep_spacing="karras", clip_x0=None),
        kd.sample_euler,
    ),
}


@pytest.mark.parametrize("name", FACES)
def test_the_timestep_face_samples_a_ddpm_network_as_k_diffusions_wrapper_does(name):
    make, theirs = FACES[name]
    schedule = NoiseSchedule.from_name("cosine")
    net = GaussianMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)  # an ε-network on integer timesteps
    wrapped = k_diffusion_module("external").DiscreteEpsDDPMDenoiser(
        net, schedule.alphas_cumprod, quantize=True
    )
    sampler = make(schedule)
    sigmas = torch.tensor(sampler.formulation.sigma_grid(sampler.timesteps), dtype=torch.float64)
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = theirs(
        wrapped, x_T * (1 + sigmas[0] ** 2).sqrt(), sigmas, disable=True
    )  # x_T/α on the VE scale
    torch.testing.assert_close(sampler.sample(net, x_T.shape, x_T=x_T), expected, rtol=1e-9, atol=1e-9)
