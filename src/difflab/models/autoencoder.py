"""LDM's KL-regularised convolutional autoencoder (diffusers' AutoencoderKL, same layers and parameter names):
an encoder to a diagonal Gaussian over latents of `latent_channels` at 1/f of the image size, f = 2^(levels-1),
and a decoder back to pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.models.autoencoder_blocks import MidBlock, ResampleBlock, norm


class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)); logvar clamped to [-30, 20] as LDM and diffusers do."""

    def __init__(self, moments: Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A draw mean + std·ε (ε from `generator` when given)."""
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def kl(self) -> Tensor:
        """KL(q ‖ N(0, I)) per sample, summed over latent elements (LDM's `kl`)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class Encoder(nn.Module):
    """conv_in → one down block per level (halving but at the last) → mid block → norm, SiLU → conv_out."""

    def __init__(
        self, in_channels: int, latent_channels: int, channels: Sequence[int], layers: int, groups: int
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        blocks, previous = [], channels[0]
        for i, width in enumerate(channels):
            resample = "down" if i < len(channels) - 1 else "none"
            blocks.append(ResampleBlock(previous, width, layers, groups, resample))
            previous = width
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(channels[-1], groups)
        self.conv_norm_out = norm(channels[-1], groups)
        self.conv_out = nn.Conv2d(channels[-1], 2 * latent_channels, 3, padding=1)  # mean and logvar

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h = block(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """conv_in → mid block → one up block per level, widest first (doubling but at the last) → norm, SiLU →
    conv_out. Up blocks have one ResNet block more than the encoder's down blocks (as in LDM)."""

    def __init__(
        self, latent_channels: int, out_channels: int, channels: Sequence[int], layers: int, groups: int
    ) -> None:
        super().__init__()
        widths = list(reversed(channels))
        self.conv_in = nn.Conv2d(latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], groups)
        blocks, previous = [], widths[0]
        for i, width in enumerate(widths):
            resample = "up" if i < len(widths) - 1 else "none"
            blocks.append(ResampleBlock(previous, width, layers + 1, groups, resample))
            previous = width
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class AutoencoderKL(nn.Module):
    """encode(x) → DiagonalGaussian over latents (N, latent_channels, H/f, W/f); decode(z) → images (N, C, H, W).

    `block_out_channels` has one width per level; the down factor is f = 2^(len - 1) (f4: three levels, f8: four).
    `scaling_factor` is the latent scale a diffusion model multiplies latents by (LDM's scale_factor: 1/std of the
    latents); 1.0 until estimated from data.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        latent_channels: int = 4,
        block_out_channels: Sequence[int] = (128, 256, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        channels = list(block_out_channels)
        bad = [width for width in channels if width % norm_num_groups]
        if bad:
            raise ValueError(
                f"autoencoder: widths {bad} are not divisible by norm_num_groups={norm_num_groups}"
            )
        out_channels = out_channels or in_channels
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.down_factor = 2 ** (len(channels) - 1)
        self.scaling_factor = float(scaling_factor)
        self.encoder = Encoder(in_channels, latent_channels, channels, layers_per_block, norm_num_groups)
        self.decoder = Decoder(latent_channels, out_channels, channels, layers_per_block, norm_num_groups)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)

    def check_image_size(self, height: int, width: int) -> None:
        """Refuse, in one line, an image size the down factor does not divide."""
        if height % self.down_factor or width % self.down_factor:
            raise ValueError(
                f"the autoencoder's down factor {self.down_factor} does not divide the image size {height}x{width}"
            )

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """The posterior over latents of images x in [-1, 1]."""
        self.check_image_size(x.shape[-2], x.shape[-1])
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: Tensor) -> Tensor:
        """Images (about [-1, 1]) from latents z (unscaled: divide by scaling_factor first)."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor, sample_posterior: bool = True) -> tuple[Tensor, DiagonalGaussian]:
        """(reconstruction, posterior): decodes a posterior draw in training, its mean with sample_posterior=False."""
        posterior = self.encode(x)
        z = posterior.sample() if sample_posterior else posterior.mean
        return self.decode(z), posterior
