"""Changing resolution between U-Net levels: strided-conv downsampling and nearest-neighbour upsampling."""

from torch import Tensor, nn
from torch.nn.functional import interpolate


class Downsample(nn.Module):
    """Halve height and width with a 3x3 convolution of stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Symmetric padding 1 (as ADM); DDPM's TF "SAME" pads only right/bottom. Same shapes and parameters.
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, H/2, W/2)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width: nearest-neighbour ×2, then a 3x3 convolution to smooth the blocks."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, 2H, 2W)."""
        return self.conv(interpolate(x, scale_factor=2.0, mode="nearest"))
