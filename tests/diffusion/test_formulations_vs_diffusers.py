"""Parity with peers (test-only): diffusers' EDMEulerScheduler and FlowMatchEulerDiscreteScheduler and Meta's
flow_matching ODE solver, stepping the same network from the same noise on the same grid, give difflab's EDM and
flow samples to float tolerance."""

import pytest
import torch
from analytic import MixtureDenoiserOfSigma
from test_formulations import MEANS, STDS, WEIGHTS, edm_network_of, flow_network_of

from difflab.diffusion import Euler
from difflab.diffusion.formulations import EDM, Flow

diffusers = pytest.importorskip("diffusers")


def test_edm_euler_matches_diffusers_edm_euler_scheduler():
    edm = EDM(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    net = edm_network_of(MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS), edm)
    scheduler = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0)
    scheduler.set_timesteps(18)
    torch.testing.assert_close(scheduler.sigmas.double(), edm.sigmas(18), rtol=1e-6, atol=0)
    start = torch.randn(256, 4, generator=torch.Generator().manual_seed(0)) * 80.0
    x = start.clone()
    for t in scheduler.timesteps:  # diffusers' loop: scale the input, call F at c_noise, step
        x_in = scheduler.scale_model_input(x, t)
        sigma = scheduler.sigmas[scheduler.step_index].expand(x.shape[0])
        x = scheduler.step(net(x_in, t.expand(x.shape[0]).float()), t, x).prev_sample
        assert torch.allclose(t.float(), sigma.log()[0] / 4, atol=1e-6)  # diffusers' c_noise is EDM's
    ours = Euler().sample(edm.denoiser(net), start.clone(), edm.sigmas(18))
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_euler_matches_diffusers_flow_match_euler_discrete_scheduler(shift):
    flow = Flow(shift=shift, t_max=0.999)
    net = flow_network_of(MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS))
    steps = 20
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=torch.linspace(0.999, 0.0, steps + 1)[:-1].tolist())
    ours_t = flow.sigmas(steps) / (1 + flow.sigmas(steps))
    torch.testing.assert_close(scheduler.sigmas.double(), ours_t, rtol=1e-6, atol=1e-7)
    noise = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    x = noise.clone()  # x_t = ε at t_max
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t.expand(x.shape[0])), t, x).prev_sample
    t_max = float(ours_t[0])
    ours = Euler().sample(flow.denoiser(net), noise / (1 - t_max), flow.sigmas(steps))
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_flow_euler_matches_metas_flow_matching_ode_solver():
    """flow_matching runs time the other way (0: noise, 1: data; velocity data − noise): s = 1 − t, u = −v."""
    solver_module = pytest.importorskip("flow_matching.solver")
    flow = Flow(shift=3.0, t_max=0.999)
    net = flow_network_of(MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS))
    sigmas = flow.sigmas(20)
    t_grid = sigmas / (
        1 + sigmas
    )  # float64 throughout: near the components' boundary float32 flips decisions

    def velocity(x, t):
        return -net(x, (1000 * (1 - t)).expand(x.shape[0]))

    noise = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = solver_module.ODESolver(velocity).sample(noise.clone(), None, "euler", time_grid=1 - t_grid)
    ours = Euler().sample(flow.denoiser(net), noise / (1 - float(t_grid[0])), sigmas)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
