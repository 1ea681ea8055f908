"""pix2pix's PatchGAN discriminator as LDM uses it for its autoencoders: a real/fake logit per image patch."""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """conv4x4/2 → LeakyReLU, then `layers - 1` conv4x4/2 → BatchNorm → LeakyReLU with doubling widths (at most
    8x), one conv4x4/1 → BatchNorm → LeakyReLU and a conv4x4/1 to one logit map. Weights N(0, 0.02), BatchNorm
    scales N(1, 0.02), as LDM's weights_init."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        parts: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < layers else 1
            parts += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            width = out
        parts.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.main = nn.Sequential(*parts)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Images (N, C, H, W) → logits (N, 1, h, w), one per patch."""
        return self.main(x)
