"""Super-resolution's data consistency: every x̂_0 projected onto down(x̂_0) = input, so outputs downsample back to
their input, with any sampler and prediction type, whatever the net gets wrong."""

from __future__ import annotations

import pytest
import torch
from analytic import WrongSRNet
from torch import Tensor

from difflab.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, NoiseSchedule
from difflab.diffusion.data_consistency import LowResProjection, downsampling_matrix
from difflab.diffusion.superres import downsample, upsample
from difflab.generation.superres import super_resolve


def images(n: int, size: int, seed: int = 0) -> Tensor:
    """Smooth-ish pictures in [-0.8, 0.8]: downsampling them never reaches the clamp."""
    g = torch.Generator().manual_seed(seed)
    return upsample(torch.rand(n, 1, size // 2, size // 2, generator=g) * 1.6 - 0.8, size).clamp(-0.8, 0.8)


@pytest.mark.parametrize(("size", "factor"), [(8, 2), (16, 4), (28, 4), (28, 7)])
def test_the_matrix_is_the_downsampling(size: int, factor: int):
    a = downsampling_matrix(size, factor)
    x = images(3, size).double()
    torch.testing.assert_close(a @ x @ a.T, downsample(x, factor))


def test_the_projection_matches_the_input_and_keeps_consistent_images():
    real, other = images(4, 28, seed=0), images(4, 28, seed=1)
    low = downsample(real, 4)
    project = LowResProjection(low, 4)
    projected = project(other)
    assert (downsample(other, 4) - low).abs().mean() > 0.1  # another picture: far from the input
    torch.testing.assert_close(downsample(projected, 4), low, atol=1e-5, rtol=0)
    torch.testing.assert_close(project(real), real, atol=1e-5, rtol=0)  # already consistent: unchanged
    torch.testing.assert_close(project(projected), projected, atol=1e-5, rtol=0)  # a projection
    # the nearest such image: only the part the input fixes changes, so it moves less than replacing it would
    assert (projected - other).norm() < (real - other).norm()


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
@pytest.mark.parametrize("sampler_class", [DDIMSampler, DPMSolverSampler, DDPMSampler])
def test_outputs_downsample_to_their_input_with_any_sampler(prediction_type: str, sampler_class):
    schedule = NoiseSchedule.from_name("linear", timesteps=1000)
    sampler = sampler_class(schedule, steps=10, prediction_type=prediction_type)
    net = WrongSRNet(schedule, prediction_type)
    low = downsample(images(3, 16), 4)
    plain = super_resolve(sampler, net, low, 16, n=2, seed=0)
    consistent = super_resolve(sampler, net, low, 16, n=2, seed=0, consistency=True)
    inputs = low.repeat_interleave(2, 0)  # output k is of input k // 2
    assert (downsample(plain, 4) - inputs).abs().mean() > 0.1
    assert (downsample(consistent, 4) - inputs).abs().max() < 1e-4
    # each output depends only on (seed, k): the batch size changes nothing
    again = super_resolve(sampler, net, low, 16, n=2, seed=0, batch_size=4, consistency=True)
    torch.testing.assert_close(again, consistent)
