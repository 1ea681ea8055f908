"""Changing resolution between U-Net levels: strided-conv downsampling and nearest-neighbour upsampling."""

from torch import Tensor, nn
from torch.nn.functional import interpolate, pad


class Downsample(nn.Module):
    """Halve height and width with a 3x3 convolution of stride 2.

    padding=1 pads every side by one (as ADM); padding=0 pads only right and bottom, as DDPM's TF "SAME" and
    diffusers' `downsample_padding=0` (google/ddpm-cifar10-32) do. Same shapes and parameters either way.
    """

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        if padding not in (0, 1):
            raise ValueError(
                f"downsample padding must be 0 (right/bottom, as DDPM's TF) or 1 (got {padding})"
            )
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, H/2, W/2)."""
        if self.padding == 0:
            x = pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width: nearest-neighbour ×2, then a 3x3 convolution to smooth the blocks."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, 2H, 2W)."""
        return self.conv(interpolate(x, scale_factor=2.0, mode="nearest"))
