"""A network is named by its weights: the same weights give the same hash however they lie in memory."""

import torch
from torch import nn

from difflab.models.weights_hash import weights_hash


def test_channels_last_one_by_one_convolutions_hash_as_the_same_weights_in_the_default_layout():
    """A 1×1 convolution in channels_last (the U-Net's shortcut and attention projections after a channels_last
    run) is contiguous with a last stride other than 1, which made hashing fail ("must be 1 to view Float as
    Byte") when sample.py named the model of a set it writes."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Conv2d(32, 8, 3))
    default = weights_hash(net)
    assert weights_hash(net.to(memory_format=torch.channels_last)) == default
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1
    assert weights_hash(net) != default
