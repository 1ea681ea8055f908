"""The blocks of LDM's KL autoencoder, named as diffusers' AutoencoderKL names them (so importing its weights is a
plain copy of the state dict): ResNet blocks without a time embedding, one-head attention, resampling, mid block."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-6  # LDM and diffusers normalise every autoencoder layer with GroupNorm(eps=1e-6)


def norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm as the autoencoder uses it (eps 1e-6, affine)."""
    return nn.GroupNorm(groups, channels, eps=EPS)


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → conv3x3 → GroupNorm → SiLU → conv3x3, plus a (1x1 where channels change) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    """Single-head self-attention over all positions of a feature map, as a residual (LDM's AttnBlock)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # diffusers' to_out.0 (then a dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(n, c, h * w).transpose(1, 2)  # (N, HW, C)
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        out = self.to_out[0](F.scaled_dot_product_attention(q, k, v))
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class Downsample(nn.Module):
    """Stride-2 conv3x3 after padding right and bottom by one (LDM's asymmetric padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResampleBlock(nn.Module):
    """`num_layers` ResNet blocks, then a halving (encoder) or doubling (decoder) unless it is the last level."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, groups: int, resample: str
    ) -> None:
        super().__init__()
        channels = [in_channels] + [out_channels] * num_layers
        self.resnets = nn.ModuleList(
            ResnetBlock(a, b, groups) for a, b in zip(channels[:-1], channels[1:], strict=True)
        )
        layer = {"down": Downsample, "up": Upsample, "none": None}[resample]
        samplers = [] if layer is None else [layer(out_channels)]
        # diffusers' key names: down blocks hold `downsamplers.0`, up blocks `upsamplers.0`.
        self.samplers_key = "upsamplers" if resample == "up" else "downsamplers"
        setattr(self, self.samplers_key, nn.ModuleList(samplers))

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for sampler in getattr(self, self.samplers_key):
            x = sampler(x)
        return x


class MidBlock(nn.Module):
    """ResNet block → attention → ResNet block at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool = True) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(channels, groups)] if attention else [])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)
