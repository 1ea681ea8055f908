"""The achieved share of the machine's peak: FLOPs of one training step (forward + backward) and one sampling step
(no-grad forward) counted by torch.utils.flop_counter, divided by the measured time, against the peak a large
GEMM reaches on the same device and threads (fp32, and bf16 for the autocast rows). difflab's U-Net and diffusers'
UNet2DModel with mapped weights, side by side (alternating rounds, medians).

    .venv/bin/python benchmarks/peak_share.py                    # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/peak_share.py --rounds 5 --device cuda
On a machine shared with other work use --threads 1: OpenMP threads that find their cores busy spin, and a
2-thread forward measured here took 40× as long as a 1-thread one while other processes ran.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable

import torch
from machine import device_name
from torch.utils.flop_counter import FlopCounterMode
from unet_vs_diffusers import CONFIGS, models, sample_step, timed, train_step

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def gemm_peak(dtype: torch.dtype, device: str, size: int, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` (size × size) @ (size × size) products: what the BLAS reaches here."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    (a @ b).sum()  # warm-up
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * size**3 / best


def flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (matmuls and convolutions, as flop_counter counts them)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gemm-size", type=int, default=None, help="default 2048 on a CPU, 8192 on a GPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.gemm_size or (8192 if args.device.startswith("cuda") else 2048)
    peak = {name: gemm_peak(dtype or torch.float32, args.device, size) for name, dtype in PRECISIONS.items()}
    print(
        f"device {args.device} ({device_name(args.device)}), {args.threads} threads, {args.rounds} rounds each (alternating), medians"
    )
    print(
        f"GEMM peak ({size}×{size} matmul): fp32 {peak['fp32'] / 1e9:,.0f} GFLOP/s, "
        f"bf16 {peak['bf16'] / 1e9:,.0f} GFLOP/s\n"
    )
    print(
        "| network | batch | what | precision | GFLOP per step (difflab / diffusers) | difflab GFLOP/s (% of peak) "
        "| diffusers GFLOP/s (% of peak) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, (name, data, batch) in CONFIGS.items():
        ours, theirs = models(name, data, args.device)
        x = torch.randn(batch, ours.in_channels, ours.image_size, ours.image_size, device=args.device)
        t = torch.randint(0, 1000, (batch,), device=args.device)
        for what, make in (("train step", train_step), ("sampling step", sample_step)):
            for precision, dtype in PRECISIONS.items():
                # Each side as its users run it (see unet_vs_diffusers.py): difflab with its defaults.
                steps = {
                    "difflab": make(copy.deepcopy(ours), x, t, dtype, fast=True),
                    "diffusers": make(copy.deepcopy(theirs), x, t, dtype, fast=False),
                }
                counted = {side: flops(fn) for side, fn in steps.items()}
                for fn in steps.values():  # warm-up outside the counter: allocator, kernels
                    fn()
                times: dict[str, list[float]] = {k: [] for k in steps}
                for _ in range(args.rounds):
                    for side, fn in steps.items():
                        times[side].append(timed(fn, args.device))
                cells = []
                for side in steps:
                    achieved = counted[side] / statistics.median(times[side])
                    cells.append(f"{achieved / 1e9:,.0f} ({100 * achieved / peak[precision]:.0f} %)")
                gflop = " / ".join(f"{c / 1e9:.1f}" for c in counted.values())  # difflab / diffusers
                print(
                    f"| {label} | {batch} | {what} | {precision} | {gflop} | {cells[0]} | {cells[1]} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
