"""A network is named by its weights: the same weights give the same hash however they lie in memory."""

import torch
from torch import nn

from difflab.models.weights_hash import weights_fingerprint, weights_hash


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


def test_a_fingerprint_tells_another_step_apart_and_reads_every_byte_of_a_small_net():
    """What a stopped sample set records of its model: fast at any size (a strided sample past the budget), the
    same for the same weights, another one for a model trained on (every weight moved)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Conv2d(32, 8, 3))
    small = weights_fingerprint(net)
    assert weights_fingerprint(net.to(memory_format=torch.channels_last)) == small
    with torch.no_grad():
        net[1].bias[-1] += 1e-3  # one weight: under the budget every byte counts
    assert weights_fingerprint(net) != small
    sampled = weights_fingerprint(net, budget_bytes=256)  # a stride of about 40 elements
    assert weights_fingerprint(net, budget_bytes=256) == sampled
    with torch.no_grad():
        for parameter in net.parameters():  # a training step
            parameter.add_(torch.randn_like(parameter) * 1e-4)
    assert weights_fingerprint(net, budget_bytes=256) != sampled
