"""Where a sampler's noise comes from: one plain generator, or one generator per sample index.

With `SampleGenerators` sample i draws its starting noise and every later noise from its own generator,
seeded from (seed, i), so a batch is a stack of independent samples (as NVlabs/edm's
StackedRandomGenerator): batch size and the number of DDP ranks never change a sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def index_seed(seed: int, index: int) -> int:
    """A distinct 63-bit seed per (seed, index); stable across processes, unlike hash() of strings."""
    return (int(seed) * 6_364_136_223_846_793_005 + int(index) * 1_442_695_040_888_963_407) % (2**63)


class SampleGenerators:
    """One CPU torch.Generator per sample index; `randn` draws row k from the k-th index's generator.

    CPU generators give the same numbers on every device, so a sample does not depend on the GPU either;
    the price is drawing on the CPU and copying, which is small next to a network evaluation.
    """

    def __init__(self, seed: int, indices: Iterable[int]) -> None:
        self.seed = int(seed)
        self.indices = [int(i) for i in indices]
        self.generators = [torch.Generator().manual_seed(index_seed(seed, i)) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"SampleGenerators(seed={self.seed}, indices={self.indices})"

    def randn(
        self, shape: Sequence[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """N(0, I) of `shape`, whose first dimension is the number of samples, on `device` as `dtype`."""
        shape = tuple(shape)
        if not shape or shape[0] != len(self.generators):
            raise ValueError(
                f"noise of shape {shape} asked from generators for {len(self.generators)} samples; "
                "the first dimension must be the number of samples"
            )
        rows = [torch.randn(shape[1:], generator=g) for g in self.generators]
        out = torch.stack(rows) if rows else torch.empty(shape)
        return out.to(device, dtype)


# What samplers and editing accept as `generator`: None (torch's global generator), one generator for
# the whole batch, or one per sample.
NoiseSource = torch.Generator | SampleGenerators | None


def draw_noise(
    shape: Sequence[int], generator: NoiseSource, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """N(0, I) from `generator`; a plain generator draws on its own device in float32 (so a CPU generator
    gives the same noise everywhere), per-sample generators draw each row from its own generator."""
    if isinstance(generator, SampleGenerators):
        return generator.randn(shape, device, dtype)
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32).to(
        device, dtype
    )
