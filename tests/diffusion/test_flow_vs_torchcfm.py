"""formulation=flow's training path against torchcfm's ConditionalFlowMatcher(sigma=0) (test-only dependency).

torchcfm runs time the other way: its x0 is the source (noise), x1 the target (data), x_s = s·x1 + (1 − s)·x0 and
u_s = x1 − x0. difflab's x_t = (1 − t)·x_0 + t·ε with velocity target ε − x_0 is the same path at s = 1 − t, with
torchcfm's x0 = ε, x1 = x_0 and u_s = −(ε − x_0)."""

import pytest
import torch

from difflab.diffusion.formulations import Flow

torchcfm = pytest.importorskip("torchcfm")


@pytest.mark.parametrize("t_sampling", ["uniform", "logit_normal"])
def test_flow_path_and_target_equal_torchcfms_conditional_flow_matcher(t_sampling):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 3, 8, 8, generator=g)
    noise = torch.randn(64, 3, 8, 8, generator=g)
    flow = Flow(t_sampling=t_sampling, shift=3.0)
    t = flow.draw_t(64, torch.device("cpu"), g)
    x_t, time, target = flow.training_example(data, t, noise)

    matcher = torchcfm.ConditionalFlowMatcher(sigma=0.0)
    s, xs, us = matcher.sample_location_and_conditional_flow(x0=noise, x1=data, t=1.0 - t)
    torch.testing.assert_close(s, 1.0 - t)
    torch.testing.assert_close(x_t, xs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(target, -us, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(time, 1000.0 * t)  # the network's time input
    assert not torch.allclose(x_t, data) and not torch.allclose(x_t, noise)  # a real mix of both ends
