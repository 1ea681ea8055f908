"""Random state of a training micro-batch as a function of (seed, step, micro-batch, rank, stream).

Resume and DDP then need no saved RNG state: a resumed run draws exactly what an uninterrupted one would, and
each rank draws its own. Shared by the training step's reseeding (training/) and the data augmentation (data/),
which both count micro-batches the same way but must not import each other.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

# Independent streams of one micro-batch: the training step's global generators (t, ε, dropout) and the
# augmentation's own generator, so that flips are not correlated with the timesteps drawn after them.
TRAINING_STREAM = 0
AUGMENTATION_STREAM = 1
CAPTION_STREAM = 2  # which template captions a text-to-image batch shows


def step_seed(seed: int, global_step: int, micro_batch: int, rank: int, stream: int = TRAINING_STREAM) -> int:
    """A 63-bit seed for one micro-batch of one rank; a SeedSequence mixes the parts, so nearby inputs
    (seed 0 step 1 vs seed 1 step 0, rank 0 vs 1) give unrelated streams, and its spawn key separates streams."""
    spawn_key = (stream,) if stream != TRAINING_STREAM else ()
    entropy = [seed % 2**32, global_step, micro_batch, rank]
    words = np.random.SeedSequence(entropy, spawn_key=spawn_key).generate_state(2)
    return (int(words[0]) << 31) ^ int(words[1])


class TrainerPosition(Protocol):
    """What a seed needs from Lightning's Trainer."""

    global_step: int
    global_rank: int


class MicroBatchSeeds:
    """Seeds of successive training micro-batches of one stream; call `next` once per training batch.

    The micro-batch is counted here rather than taken from batch_idx: Lightning's epoch bookkeeping may restart
    batch_idx at 0 after a resume, while global_step (restored) and this count (0 at a step boundary) do not move.
    """

    def __init__(self, seed: int, stream: int = TRAINING_STREAM) -> None:
        self.seed = int(seed)
        self.stream = stream
        self._step, self._micro = -1, 0  # which micro-batch of which optimizer step was seeded last

    def next(self, trainer: TrainerPosition) -> int:
        """The seed of the micro-batch now starting."""
        if trainer.global_step != self._step:
            self._step, self._micro = trainer.global_step, 0
        else:
            self._micro += 1
        return step_seed(self.seed, self._step, self._micro, trainer.global_rank, self.stream)
