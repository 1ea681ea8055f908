"""Editing and super-resolution's data consistency on the continuous core: each takes any denoiser D(x, σ) and
any core sampler, so they work for every formulation; guidance of a network is guidance of its D."""

import pytest
import torch
from analytic import LabelledMixtureDenoiser, MixtureDenoiserOfSigma

from difflab.diffusion import DDIM, VP, Euler, Heun, NoiseSchedule, karras_sigmas
from difflab.diffusion.data_consistency import DataConsistent, LowResProjection
from difflab.diffusion.editing import repaint_sigmas, sdedit
from difflab.diffusion.guidance import Guided
from difflab.diffusion.superres import downsample

MEANS, STDS, WEIGHTS = [-0.5, 0.5], [0.15, 0.15], [0.5, 0.5]


class AsModule(torch.nn.Module):
    """A plain callable net(x_t, t, cond) as the nn.Module that Guided holds."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, cond=None):
        return self.net(x, t, cond)


def on_pictures(denoiser):
    """D of (N, 1, H, W) pictures from a D of flat (N, d) points."""
    return lambda x, sigma: denoiser(x.flatten(1), sigma).view_as(x)


@pytest.mark.parametrize("sampler", [Heun(), DDIM(1.0)], ids=["heun", "ddim_eta1"])
def test_data_consistency_wraps_any_denoiser_so_outputs_downsample_to_their_input(sampler):
    g = torch.Generator().manual_seed(0)
    low = torch.rand(3, 1, 4, 4, generator=g) - 0.5
    denoiser = on_pictures(MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS))  # knows nothing of `low`
    sigmas = karras_sigmas(12, sigma_min=0.002, sigma_max=80.0)
    x = 80.0 * torch.randn(3, 1, 16, 16, generator=g)
    plain = sampler.sample(denoiser, x, sigmas, generator=torch.Generator().manual_seed(1))
    consistent = sampler.sample(
        DataConsistent(denoiser, LowResProjection(low, 4)),
        x,
        sigmas,
        generator=torch.Generator().manual_seed(1),
    )
    assert (downsample(plain, 4) - low).abs().mean() > 0.1
    assert (downsample(consistent, 4) - low).abs().max() < 1e-4


def test_sdedit_on_the_core_keeps_a_lightly_noised_picture_and_forgets_a_heavily_noised_one():
    denoiser = MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS)
    picture = torch.full((2000, 4), -0.45)  # a point of the negative component
    light = sdedit(
        Euler(), denoiser, picture, karras_sigmas(10, 0.002, 0.05), torch.Generator().manual_seed(0)
    )
    assert (light - picture).abs().mean() < 0.05
    heavy = sdedit(
        Euler(), denoiser, picture, karras_sigmas(40, 0.002, 80.0), torch.Generator().manual_seed(0)
    )
    positive = (heavy.mean(1) > 0).float().mean().item()
    assert positive == pytest.approx(0.5, abs=0.05)  # back to the data: either component, as often


def test_repaint_on_the_core_keeps_the_known_pixels_and_fills_the_rest_in_agreement():
    # Every point of the mixture has all four coordinates in one component: a fill that ignored the kept pixels
    # would land in the other component half the time.
    denoiser = on_pictures(MixtureDenoiserOfSigma(MEANS, STDS, WEIGHTS))
    g = torch.Generator().manual_seed(0)
    image = (0.5 + 0.15 * torch.randn(300, 1, 2, 2, generator=g)).clamp(-1, 1)  # the positive component
    mask = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(1, 1, 2, 2)  # generate the bottom row
    levels = karras_sigmas(40, sigma_min=0.002, sigma_max=80.0)[:-1].flip(0)  # ascending
    out = repaint_sigmas(denoiser, image, mask, levels, jump_length=5, jump_n_sample=5, generator=g)
    torch.testing.assert_close(out[:, :, 0], image[:, :, 0], rtol=0, atol=0)  # kept pixels: exact
    filled = out[:, :, 1]
    assert (filled > 0).float().mean().item() > 0.97
    assert filled.mean().item() == pytest.approx(0.5, abs=0.05)


def test_guiding_a_network_is_guiding_its_denoiser():
    # D is affine in the network's output with weights that sum to 1, so m_u + s(m_c − m_u) gives
    # D_u + s(D_c − D_u): guidance written once on the network serves every formulation's D.
    schedule = NoiseSchedule.from_name("cosine")
    net = LabelledMixtureDenoiser(schedule, MEANS, STDS, WEIGHTS)
    labels = torch.tensor([0, 1, 1, 0])
    vp = VP(schedule)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    sigma = torch.full((4,), vp.sigma(400), dtype=torch.float64)
    cond = vp.denoiser(lambda x_t, t: net(x_t, t, {"labels": labels}), clip_x0=None)(x, sigma)
    uncond = vp.denoiser(lambda x_t, t: net(x_t, t), clip_x0=None)(x, sigma)
    guided = vp.denoiser(Guided(AsModule(net), {"labels": labels}, 3.0), clip_x0=None)
    torch.testing.assert_close(guided(x, sigma), uncond + 3.0 * (cond - uncond))


def test_repaint_of_an_edm_model_starts_at_its_sigma_max_unless_a_spacing_is_given():
    from difflab.diffusion.editing import repaint
    from difflab.diffusion.formulations import EDM
    from difflab.diffusion.formulations.timestep_face import table_schedule

    table = table_schedule(EDM())

    def model(x_t, t):  # any ε-model on the table: the grid it is called on is what differs
        return 0.5 * x_t

    image, mask = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    mask[..., :2] = 0

    def painted(**spacing):
        g = torch.Generator().manual_seed(0)
        return repaint(model, table, image, mask, steps=10, jump_n_sample=1, generator=g, **spacing)

    assert torch.equal(painted(), painted(timestep_spacing="karras"))  # EDM's own grid, σ_max to σ_min
    assert not torch.equal(painted(), painted(timestep_spacing="leading"))
