"""The normalisation every U-Net block uses."""

from torch import nn


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm with eps=1e-6, the value of the DDPM TensorFlow code."""
    return nn.GroupNorm(num_groups, channels, eps=1e-6)


def zero_(module: nn.Module) -> nn.Module:
    """Set all parameters of `module` to zero in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
