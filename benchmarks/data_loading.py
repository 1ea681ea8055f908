"""The data path alone: setup time and memory of a data module, its first training epoch (where in-memory
sources transform each image once) and then seconds per training batch of its train_dataloader (no model),
on one thread. Measures whatever difflab is importable, so the same script times the code before and after
a change.

    .venv/bin/python benchmarks/data_loading.py                               # digits, 200 batches of 64
    .venv/bin/python benchmarks/data_loading.py --dataset mnist --root ../shared/data --image-size 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psutil
import torch

from difflab.data import ImageDataModule


def rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over --batches batches")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    before = rss_mb()
    data = ImageDataModule(
        args.dataset,
        root=args.root,
        image_size=args.image_size,
        channels=args.channels,
        batch_size=args.batch_size,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    start = time.perf_counter()
    data.setup()
    setup_s = time.perf_counter() - start
    print(
        f"{args.dataset} {args.channels}x{args.image_size}x{args.image_size}: setup {setup_s:.2f} s, "
        f"RSS +{rss_mb() - before:.0f} MB (now {rss_mb():.0f} MB)"
    )

    loader = data.train_dataloader()
    start = time.perf_counter()
    first = sum(1 for _ in loader)  # where images are transformed once, this pass transforms them
    first_s = time.perf_counter() - start
    print(f"first epoch ({first} batches): {first_s:.2f} s, RSS now {rss_mb():.0f} MB")
    per_batch = []
    for _ in range(args.rounds):
        batches = iter(loader)
        start, seen = time.perf_counter(), 0
        while seen < args.batches:
            try:
                next(batches)
            except StopIteration:  # an epoch ended: the next iteration is the next epoch
                batches = iter(loader)
                continue
            seen += 1
        per_batch.append((time.perf_counter() - start) / seen)
    ms = sorted(1e3 * s for s in per_batch)
    print(
        f"train batch of {args.batch_size}: median {statistics.median(ms):.3f} ms "
        f"(min {ms[0]:.3f}, max {ms[-1]:.3f}; {args.rounds} rounds of {args.batches} batches)"
    )


if __name__ == "__main__":
    main()
