"""A DiT's training step copies no activation per block: its speed against diffusers' DiTTransformer2DModel
(benchmarks/dit_vs_diffusers.py) rests on the tokens staying in one contiguous layout through every block."""

import torch
from torch.profiler import ProfilerActivity, profile

from difflab.models import DiT

TINY = dict(in_channels=4, image_size=8, patch_size=2, hidden_size=32, num_heads=4, num_classes=10)


def activation_copies(depth: int) -> int:
    """How many tensors of at least one block activation's size are cloned in one forward + backward."""
    net = DiT(depth=depth, **TINY).train()
    x = torch.randn(2, 4, 8, 8)
    activation = 2 * 16 * 32  # N · tokens · width
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        net(x, torch.tensor([1, 500]), torch.tensor([3, 7])).square().mean().backward()
    sizes = (
        torch.Size(event.input_shapes[0]).numel()
        for event in prof.events()
        if event.name == "aten::clone" and event.input_shapes and event.input_shapes[0]
    )
    return sum(size >= activation for size in sizes)


def test_a_train_step_copies_no_activation_per_block():
    # Before: tokens kept the patch convolution's transposed layout, so every LayerNorm copied its input forward
    # and backward, and the qkv gradient was stacked then copied: three clones more per block.
    assert activation_copies(depth=4) == activation_copies(depth=1)
