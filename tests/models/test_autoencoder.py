"""The KL autoencoder: latent shapes for f4/f8, the posterior, one-line refusals, and parity with diffusers'
AutoencoderKL when a diffusers folder (Stable Diffusion's VAE format) is imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from difflab.model_folder.diffusers_autoencoder import load_autoencoder_folder
from difflab.models.autoencoder import AutoencoderKL, DiagonalGaussian

SMALL = dict(latent_channels=4, block_out_channels=(32, 32, 64), layers_per_block=1, norm_num_groups=32)


@pytest.mark.parametrize("widths, factor", [((32, 32, 64), 4), ((32, 32, 64, 64), 8)])
def test_latents_are_the_image_down_by_the_factor_and_decode_back_to_its_shape(widths, factor):
    net = AutoencoderKL(
        in_channels=3, latent_channels=3, block_out_channels=widths, layers_per_block=1
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        posterior = net.encode(x)
        recon = net.decode(posterior.mean)
    assert net.down_factor == factor
    assert posterior.mean.shape == (2, 3, 32 // factor, 32 // factor)
    assert recon.shape == x.shape


def test_an_image_size_the_down_factor_does_not_divide_is_refused_in_one_line():
    net = AutoencoderKL(in_channels=1, **SMALL)
    with pytest.raises(ValueError, match=r"down factor 4 does not divide the image size 30x30"):
        net.encode(torch.randn(1, 1, 30, 30))


def test_posterior_clamps_logvar_and_its_kl_is_zero_at_the_prior():
    moments = torch.cat([torch.zeros(2, 4, 3, 3), torch.full((2, 4, 3, 3), -100.0)], dim=1)
    assert DiagonalGaussian(moments).logvar.min() == -30.0
    prior = DiagonalGaussian(torch.zeros(2, 8, 3, 3))
    assert torch.allclose(prior.kl(), torch.zeros(2))
    assert (DiagonalGaussian(torch.ones(2, 8, 3, 3)).kl() > 0).all()
    draws = prior.sample(torch.Generator().manual_seed(0))
    assert draws.std() > 0.5  # a draw, not the mean


def diffusers_folder(tmp_path: Path, widths: tuple[int, ...]) -> tuple[Path, torch.nn.Module]:
    """A randomly initialised diffusers AutoencoderKL saved as a Stable Diffusion VAE folder."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    reference = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        scaling_factor=0.3,
    ).eval()
    folder = tmp_path / "vae"
    reference.save_pretrained(folder, safe_serialization=True)
    return folder, reference


@pytest.mark.parametrize("widths", [(32, 64, 64), (32, 32, 64, 64)])
def test_an_imported_diffusers_autoencoder_encodes_and_decodes_as_diffusers_does(tmp_path, widths):
    folder, reference = diffusers_folder(tmp_path, widths)
    net, args = load_autoencoder_folder(folder)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = reference.encode(x).latent_dist
        got = net.encode(x)
        z = torch.randn_like(got.mean)
        expected_images = reference.decode(z).sample
        images = net.decode(z)
    assert args["scaling_factor"] == 0.3 and net.scaling_factor == 0.3
    torch.testing.assert_close(got.mean, expected.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.logvar, expected.logvar, atol=1e-5, rtol=1e-5)
    # float32 sums in another order: 1e-5 of the output's scale (about 1)
    torch.testing.assert_close(images, expected_images, atol=1e-4, rtol=1e-4)


def test_a_diffusers_folder_difflab_cannot_express_is_refused_in_one_line(tmp_path):
    folder, _ = diffusers_folder(tmp_path, (32, 64))
    config = json.loads((folder / "config.json").read_text())
    config["shift_factor"] = 0.1159  # an SD3/FLUX-style VAE: latents shifted before scaling
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"cannot express shift_factor=0.1159") as error:
        load_autoencoder_folder(folder)
    assert "\n" not in str(error.value)


def test_a_damaged_weights_file_is_a_one_line_error(tmp_path):
    folder, _ = diffusers_folder(tmp_path, (32, 64))
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"damaged or cut short"):
        load_autoencoder_folder(folder)
