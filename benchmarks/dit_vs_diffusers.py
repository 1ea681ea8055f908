"""difflab's DiT against diffusers' DiTTransformer2DModel of the same configuration (the weights are mapped, so
both compute the same function), side by side in one process: a training step (forward + backward + AdamW) and
a sampling step (no-grad forward), fp32 (and bf16 autocast on a GPU, or with --bf16: on a CPU without bf16 matrix
units bf16 autocast ran 3–6× slower than fp32, for both). Rounds alternate between the two, so a noisy machine
hits both alike; the table gives medians, min–max and the ratio difflab / diffusers of images per second.

Both sides get the same optimizer (torch's fused AdamW) and input layout, so the ratio is the networks'. The
network is DiT-S/2 (width 384, 12 blocks, 6 heads, 2×2 patches, 1,000 classes) on 4×16×16 inputs (64 tokens), a
smaller input than the paper's 32×32 latents so a CPU run takes about a minute; `--size 16 32` adds the paper's
32×32 latents (256 tokens).

    .venv/bin/python benchmarks/dit_vs_diffusers.py
    .venv/bin/python benchmarks/dit_vs_diffusers.py --rounds 7 --threads 1 --size 16 32
    .venv/bin/python benchmarks/dit_vs_diffusers.py --rounds 7 --threads 2 --size 32 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from machine import cpu_name

from difflab.model_folder.dit_mapping import diffusers_dit, dit_arguments
from difflab.models import DiT

DIT_S2 = dict(patch_size=2, hidden_size=384, depth=12, num_heads=6, num_classes=1000, in_channels=4)


def models(size: int, device: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """difflab's DiT-S/2 at `size` and diffusers' DiTTransformer2DModel holding the same weights."""
    config = {"_target_": "difflab.models.DiT", **DIT_S2, "image_size": size}
    ours = DiT(**{k: v for k, v in config.items() if k != "_target_"})
    with torch.no_grad():  # move the zero-initialised gates, so both compute something
        for p in ours.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    theirs = diffusers_dit(ours.state_dict(), dit_arguments(config))
    return ours.to(device).train(), theirs.to(device).train()


def call_of(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> Callable:
    """The forward each library's users write: model(x, t, labels) or model(x, t, class_labels=…).sample."""
    if isinstance(net, DiT):
        return lambda: net(x, t, y)
    return lambda: net(x, t, class_labels=y).sample


def train_step(net: torch.nn.Module, x, t, y, dtype: torch.dtype | None) -> Callable:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    call = call_of(net, x, t, y)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            loss = (call().float() - x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sample_step(net: torch.nn.Module, x, t, y, dtype: torch.dtype | None) -> Callable:
    call = call_of(net, x, t, y)

    @torch.no_grad()
    def step() -> None:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            call()

    return step


def timed(fn: Callable, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)  # 2 on a shared 2-core VM: spinning, 2× the spread
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs="+", default=[16], help="input sizes, one row each")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="also bf16 autocast on a CPU")
    args = parser.parse_args()
    precisions = [("fp32", None)]
    if args.bf16 or args.device.startswith("cuda"):
        precisions.append(("bf16", torch.bfloat16))
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(
        f"{where}, {args.device}, {args.threads} threads, {args.rounds} rounds each (alternating), medians\n"
    )
    print(
        "| network | batch | what | precision | difflab img/s (min–max) | diffusers img/s (min–max) | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.size:
        rows(size, args, precisions)


def rows(size: int, args: argparse.Namespace, precisions: list[tuple[str, torch.dtype | None]]) -> None:
    """Print the train-step and sampling-step rows of DiT-S/2 on 4×size×size inputs."""
    ours, theirs = models(size, args.device)
    label = f"DiT-S/2 4×{size}×{size} ({ours.num_parameters() / 1e6:.2f}M)"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, size, size, generator=g).to(args.device)
    t = torch.randint(0, 1000, (args.batch,), generator=g).to(args.device)
    y = torch.randint(0, 1000, (args.batch,), generator=g).to(args.device)
    for what, make in (("train step", train_step), ("sampling step", sample_step)):
        for precision, dtype in precisions:
            steps = {
                "difflab": make(copy.deepcopy(ours), x, t, y, dtype),
                "diffusers": make(copy.deepcopy(theirs), x, t, y, dtype),
            }
            for fn in steps.values():  # warm-up: allocator, kernels
                fn()
            times: dict[str, list[float]] = {k: [] for k in steps}
            for _ in range(args.rounds):
                for key, fn in steps.items():
                    times[key].append(timed(fn, args.device))
            rate = {k: [args.batch / s for s in v] for k, v in times.items()}
            cells = [f"{statistics.median(r):.1f} ({min(r):.1f}–{max(r):.1f})" for r in rate.values()]
            ratio = statistics.median(rate["difflab"]) / statistics.median(rate["diffusers"])
            print(
                f"| {label} | {args.batch} | {what} | {precision} | {cells[0]} | {cells[1]} | {ratio:.2f}× |"
            )


if __name__ == "__main__":
    main()
