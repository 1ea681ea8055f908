"""What writing PNGs on threads saves sample.py: its result files written in turn with generation (as before)
against by png_writers threads while the next batch is made, with generation that leaves the CPU free as a GPU
does (a wait of a fixed time per batch). Rounds alternate between the two. Prints a markdown table.

    .venv/bin/python benchmarks/png_writers.py
    .venv/bin/python benchmarks/png_writers.py --sizes 32 256 --generate-ms 100 500 --writers 1 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_name

from difflab.io.write_images import writing_samples


def picture_like(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n RGB images in [-1, 1] with the smooth regions and edges of pictures (upsampled 8×8 noise, plus a little
    grain): PNG compresses them as it does samples, not as it does white noise."""
    coarse = torch.rand((n, 3, 8, 8), generator=generator) * 2 - 1
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.randn(smooth.shape, generator=generator)).clamp(-1, 1)


def run_once(batches: list[torch.Tensor], generate_s: float, writers: int, folder: Path) -> float:
    """Seconds to 'generate' (wait) and write every batch into a fresh folder."""
    count = sum(len(batch) for batch in batches)
    start = time.perf_counter()
    with writing_samples(folder, count, writers) as files:
        for batch in batches:
            time.sleep(generate_s)  # a GPU computing the batch: the CPU is free meanwhile
            files.add(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--generate-ms", type=float, nargs="+", default=[100.0, 500.0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} torch threads; median of {args.rounds} rounds\n")
    print(
        "| image | batch | generation per batch | written in turn img/s | writers | with writers img/s | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(dir=".") as scratch:
        runs = iter(range(10**6))
        for size in args.sizes:
            batches = [picture_like(args.batch, size, generator) for _ in range(args.batches)]
            count = args.batch * args.batches
            for generate_ms in args.generate_ms:
                for writers in args.writers:
                    times: dict[int, list[float]] = {0: [], writers: []}
                    for _ in range(args.rounds):
                        for w in (0, writers):
                            folder = Path(scratch) / f"run{next(runs)}"
                            times[w].append(run_once(batches, generate_ms / 1000, w, folder))
                    in_turn = count / statistics.median(times[0])
                    threaded = count / statistics.median(times[writers])
                    print(
                        f"| 3×{size}×{size} | {args.batch} | {generate_ms:.0f} ms | {in_turn:.0f} | {writers} | "
                        f"{threaded:.0f} | {threaded / in_turn:.2f}× |"
                    )


if __name__ == "__main__":
    main()
