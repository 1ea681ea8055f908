"""Sample i depends only on (seed, i): not on the batch size, nor on how many DDP ranks share the work,
for every sampler, the stochastic ones (DDPM, DDIM with η > 0) too."""

import pytest
import torch
from analytic import GaussianMixtureDenoiser

from difflab.callbacks.sharding import interleave, rank_indices
from difflab.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    EulerSampler,
    HeunSampler,
    NoiseSchedule,
    SampleGenerators,
)
from difflab.diffusion.generate import generate

SCHEDULE = NoiseSchedule.from_name("linear")
MODEL = GaussianMixtureDenoiser(SCHEDULE, [-0.5, 0.5], [0.15, 0.15], [0.3, 0.7])
N, SHAPE, SEED = 8, (4,), 3

SAMPLERS = {
    "ddpm": lambda: DDPMSampler(SCHEDULE, steps=25),
    "ddim_eta1": lambda: DDIMSampler(SCHEDULE, steps=10, eta=1.0),
    "dpm++": lambda: DPMSolverSampler(SCHEDULE, steps=5),
    "euler": lambda: EulerSampler(SCHEDULE, steps=5),
    "heun": lambda: HeunSampler(SCHEDULE, steps=3),
}


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_batch_size_does_not_change_any_sample(make):
    sampler = make()
    whole = generate(sampler, MODEL, range(N), SHAPE, SEED, batch_size=N)
    # Bitwise: every row is drawn from its own generator and the model's arithmetic is row by row.
    assert torch.equal(generate(sampler, MODEL, range(N), SHAPE, SEED, batch_size=3), whole)
    assert torch.equal(generate(sampler, MODEL, [5], SHAPE, SEED, batch_size=1)[0], whole[5])
    assert len(torch.unique(whole, dim=0)) == N  # and no two samples are the same


@pytest.mark.parametrize("make", [SAMPLERS["ddpm"], SAMPLERS["ddim_eta1"]], ids=["ddpm", "ddim_eta1"])
def test_two_ranks_interleaved_equal_one_process(make):
    sampler = make()
    alone = generate(sampler, MODEL, range(N), SHAPE, SEED, batch_size=4)
    # Rank r of 2 samples r, r + 2, …, each at its own batch size; gathered back in index order.
    parts = [generate(sampler, MODEL, rank_indices(N, r, 2), SHAPE, SEED, batch_size=3 - r) for r in range(2)]
    assert torch.equal(interleave(parts), alone)


def test_the_noise_inside_stochastic_steps_is_per_sample_too():
    # The same start x_T, different in-loop noise: samples differ, so the steps do draw fresh noise,
    # and they draw it from each sample's generator (the seed changes it).
    sampler = SAMPLERS["ddpm"]()
    x_T = SampleGenerators(SEED, range(N)).randn((N, *SHAPE))
    a = sampler.sample(MODEL, (N, *SHAPE), generator=SampleGenerators(SEED, range(N)), x_T=x_T)
    b = sampler.sample(MODEL, (N, *SHAPE), generator=SampleGenerators(SEED + 1, range(N)), x_T=x_T)
    assert not torch.isclose(a, b).any()


def test_a_plain_generator_still_drives_a_whole_batch():
    sampler = SAMPLERS["ddim_eta1"]()
    a = sampler.sample(MODEL, (N, *SHAPE), generator=torch.Generator().manual_seed(0))
    b = sampler.sample(MODEL, (N, *SHAPE), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_generators_refuse_noise_for_another_number_of_samples():
    with pytest.raises(ValueError, match=r"generators for 3 samples; the first dimension must be"):
        DDPMSampler(SCHEDULE, steps=5).sample(MODEL, (4, 2), generator=SampleGenerators(0, range(3)))
