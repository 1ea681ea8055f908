"""Autoguidance (Karras et al. 2024): D = D_guide + s(D_main − D_guide), on exact denoisers of known data."""

import pytest
import torch
from analytic import GaussianMixtureDenoiser

from difflab.diffusion import DDIMSampler, NoiseSchedule
from difflab.diffusion.guidance import AutoGuided, guided_for

D = 2


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.from_name("cosine")


class Counting:
    """A denoiser that counts its calls."""

    def __init__(self, net):
        self.net, self.calls = net, 0

    def __call__(self, x, t, *cond):
        self.calls += 1
        return self.net(x, t)


def test_autoguidance_is_the_guide_plus_s_times_the_difference(schedule):
    main = GaussianMixtureDenoiser(schedule, [0.0], [0.5], [1.0])
    weak = GaussianMixtureDenoiser(schedule, [0.0], [0.8], [1.0])
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((16,), 400)
    m, g = main(x, t), weak(x, t)
    torch.testing.assert_close(AutoGuided(main, weak, None, 2.5)(x, t), g + 2.5 * (m - g))
    # s = 1 is the main model alone, one call; a guide equal to the main model changes nothing at any s.
    counted = Counting(weak)
    torch.testing.assert_close(AutoGuided(main, counted, None, 1.0)(x, t), m)
    assert counted.calls == 0
    torch.testing.assert_close(AutoGuided(main, main, None, 4.0)(x, t), m)


def test_guiding_away_from_a_blurrier_model_sharpens_the_samples(schedule):
    """A guide that spreads its data wider (std 0.8 against the main model's 0.5) pulls samples towards the
    main model's mode: the guided samples' spread shrinks below the data's, monotonically in s."""
    main = GaussianMixtureDenoiser(schedule, [0.0], [0.5], [1.0])
    weak = GaussianMixtureDenoiser(schedule, [0.0], [0.8], [1.0])
    sampler = DDIMSampler(schedule, steps=50, clip_x0=None)
    stds = []
    for scale in (1.0, 1.5, 2.5):
        g = torch.Generator().manual_seed(1)
        x = sampler.sample(AutoGuided(main, weak, None, scale), (4000, D), generator=g)
        stds.append(float(x.std()))
    assert stds[0] == pytest.approx(0.5, rel=0.05)  # s = 1 samples the main model's data
    assert stds[0] > stds[1] > stds[2]


def test_guided_for_builds_autoguidance_for_conditional_and_unconditional_models(schedule):
    main = GaussianMixtureDenoiser(schedule, [0.0], [0.5], [1.0])
    weak = GaussianMixtureDenoiser(schedule, [0.0], [0.8], [1.0])
    unconditional = guided_for(main, None, [0, 1], 2.0, guide=weak)
    assert isinstance(unconditional, AutoGuided) and unconditional.cond is None
    labels = lambda idx: {"labels": torch.tensor(idx)}  # noqa: E731
    conditional = guided_for(main, labels, [3, 4], 2.0, guide=weak)
    assert torch.equal(conditional.cond["labels"], torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="negative prompt.*guide="):
        guided_for(main, labels, [0], 2.0, labels, guide=weak)
