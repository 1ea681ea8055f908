"""The training order: one permutation per epoch drawn from (seed, epoch), dealt out to the DDP ranks, able to
start part way through an epoch so that a resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices of rank `rank` of `world_size` for whole batches of `batch_size`.

    Epoch e shuffles all `size` indices with a generator seeded from (seed, e) and deals them out: rank r takes
    positions r, r + W, r + 2W, … of the permutation. Every rank gets the same number of full batches
    (`batches_per_epoch`); the remainder of the epoch is left out, as DataLoader's drop_last would.

    A dataset too small to give every rank one full batch (size < W × batch_size) is repeated: the epoch
    deals `repeats` permutations one after the other (the k-th, k ≥ 1, seeded from (seed, e, k)), just
    enough for one batch per rank, so every image still appears equally often.

    `position()` says how many batches of this rank the run has consumed so far (across epochs). It is asked
    when the first iteration starts (after Lightning has restored a checkpoint), which then covers epoch
    position // batches_per_epoch from batch position % batches_per_epoch on: after a resume, the rest of
    the interrupted epoch. Every later iteration is the whole next epoch. The order therefore follows the
    run's progress, not Lightning's epoch counter (which, resuming from a checkpoint written when training
    ended mid-epoch, counts that epoch as finished), and every iteration but the first is a whole epoch, so
    Lightning always reaches an epoch's last batch and steps the optimizer on its last accumulation group.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.position = position or (lambda: 0)
        # At least one batch per rank (none only for an empty dataset), repeating the data when it is short.
        self.batches_per_epoch = max(1, (size // world_size) // batch_size) if size > 0 else 0
        self.repeats = max(1, -(-world_size * batch_size // size)) if size > 0 else 1
        # (epoch, batch) where the next iteration starts; None until the first one has asked position().
        self._next_start: tuple[int, int] | None = None

    def __len__(self) -> int:
        """Indices in a whole epoch (an iteration that starts mid-epoch yields fewer)."""
        return self.batches_per_epoch * self.batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for `epoch`, in order: batches_per_epoch × batch_size of them."""
        order = torch.cat([self._permutation(epoch, k) for k in range(self.repeats)])
        return order[self.rank :: self.world_size][: len(self)]

    def _permutation(self, epoch: int, repeat: int) -> torch.Tensor:
        """The `repeat`-th shuffle of all indices in `epoch` (the 0-th is the only one unless data is short)."""
        key = [self.seed % 2**32, epoch] + ([repeat] if repeat else [])
        state = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        if self.batches_per_epoch == 0:
            return iter([])
        if self._next_start is None:
            epoch, batch = divmod(self.position(), self.batches_per_epoch)
        else:
            epoch, batch = self._next_start
        self._next_start = (epoch + 1, 0)
        return iter(self.epoch_order(epoch)[batch * self.batch_size :].tolist())
