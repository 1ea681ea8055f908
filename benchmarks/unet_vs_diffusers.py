"""difflab's U-Net against diffusers' UNet2DModel of the same architecture (the weights are mapped, so both
compute the same function), side by side in one process: training step (forward + backward + Adam) and one
sampling step (no-grad forward), fp32 and bf16 autocast. Rounds alternate between them, so a noisy machine
hits all alike; the table gives medians, min–max and the ratio difflab / diffusers of images per second.

Each side runs as its library's users get it: difflab with its defaults (channels_last, conf/optim/adam.yaml's
fused Adam), diffusers as its training examples do (default layout, torch's default Adam). A third column,
"diffusers tuned", gives diffusers difflab's two knobs, to show how much of the ratio is the knobs.

    .venv/bin/python benchmarks/unet_vs_diffusers.py                 # CIFAR DDPM net b16 and an MNIST-size net b64
    .venv/bin/python benchmarks/unet_vs_diffusers.py --rounds 7 --threads 2 --device cuda
    .venv/bin/python benchmarks/unet_vs_diffusers.py --regional   # + train-step rows with compile=regional
    .venv/bin/python benchmarks/unet_vs_diffusers.py --regional --threads 1 --network cifar --precision fp32
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from diffusers import UNet2DModel
from hydra import compose, initialize_config_dir
from machine import device_name
from omegaconf import OmegaConf

from difflab.model_folder.diffusers_mapping import diffusers_config, to_diffusers, unet_arguments
from difflab.models import UNet
from difflab.training.compile import compile_denoiser

CONFIGS = {  # name: (model config, data overrides, batch)
    "unet_ddpm_cifar10 3×32×32": ("unet_ddpm_cifar10", ["data.image_size=32", "data.channels=3"], 16),
    "unet_small 1×32×32": ("unet_small", ["data.image_size=32", "data.channels=1"], 64),
}

NETWORKS = {"unet_ddpm_cifar10 3×32×32": "cifar", "unet_small 1×32×32": "small"}  # the --network names
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def models(name: str, data: list[str], device: str) -> tuple[UNet, UNet2DModel]:
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", *data])
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    ours = UNet(**{k: v for k, v in model_config.items() if not k.startswith("_")})
    theirs = UNet2DModel(**diffusers_config(unet_arguments(model_config)))
    theirs.load_state_dict(to_diffusers(ours.state_dict()))
    return ours.to(device), theirs.to(device)


def tuned(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    """The net and input in channels_last (NHWC): difflab's default layout for training and sampling."""
    return net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


def train_step(
    net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, dtype: torch.dtype | None, fast: bool
) -> Callable:
    if fast:
        net, x = tuned(net, x)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=fast or None)
    call = (lambda: net(x, t)) if isinstance(net, UNet) else (lambda: net(x, t).sample)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            loss = (call().float() - x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sample_step(
    net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, dtype: torch.dtype | None, fast: bool
) -> Callable:
    if fast:
        net, x = tuned(net, x)
    call = (lambda: net(x, t)) if isinstance(net, UNet) else (lambda: net(x, t).sample)

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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--regional",
        action="store_true",
        help="also a train-step row with difflab's compile=regional (compile time)",
    )
    parser.add_argument(
        "--network", choices=("all", *NETWORKS.values()), default="all", help="one network only"
    )
    parser.add_argument("--precision", choices=("all", *PRECISIONS), default="all", help="one precision only")
    parser.add_argument(
        "--batch", type=int, help="instead of each network's batch (a shorter compile on a CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"device {args.device} ({device_name(args.device)}), {args.threads} threads, {args.rounds} rounds each (alternating), medians\n"
    )
    print(
        "| network | batch | what | precision | difflab img/s (min–max) | diffusers img/s (min–max) "
        "| ratio | diffusers tuned img/s | ratio to tuned |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, (name, data, batch) in CONFIGS.items():
        if args.network not in ("all", NETWORKS[label]):
            continue
        batch = args.batch or batch
        ours, theirs = models(name, data, args.device)
        label = f"{label} ({sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M)"
        channels, size = ours.in_channels, ours.image_size
        x = torch.randn(batch, channels, size, size, device=args.device)
        t = torch.randint(0, 1000, (batch,), device=args.device)
        kinds = [("train step", train_step, False), ("sampling step", sample_step, False)]
        if args.regional:
            kinds.insert(1, ("train step, compile=regional", train_step, True))
        for what, make, regional in kinds:
            for precision, dtype in PRECISIONS.items():
                if args.precision not in ("all", precision):
                    continue
                net = copy.deepcopy(ours)
                if regional:
                    compile_denoiser(
                        net, "regional"
                    )  # each ResAttnBlock (what compile=regional does in training)
                steps = {
                    "difflab": make(net, x, t, dtype, fast=True),
                    "diffusers": make(copy.deepcopy(theirs), x, t, dtype, fast=False),
                    "tuned": make(copy.deepcopy(theirs), x, t, dtype, fast=True),
                }
                first = timed(steps["difflab"], args.device)  # includes the compilation when regional
                for fn in steps.values():  # warm-up: allocator, kernels
                    fn()
                times: dict[str, list[float]] = {k: [] for k in steps}
                for _ in range(args.rounds):
                    for key, fn in steps.items():
                        times[key].append(timed(fn, args.device))
                rate = {k: [batch / s for s in v] for k, v in times.items()}
                cells = [f"{statistics.median(r):.1f} ({min(r):.1f}–{max(r):.1f})" for r in rate.values()]
                median = {k: statistics.median(r) for k, r in rate.items()}
                ratio, ratio_tuned = (
                    median["difflab"] / median["diffusers"],
                    median["difflab"] / median["tuned"],
                )
                print(
                    f"| {label} | {batch} | {what} | {precision} | {cells[0]} | {cells[1]} | {ratio:.2f}× "
                    f"| {cells[2]} | {ratio_tuned:.2f}× |"
                )
                if regional:
                    print(
                        f"|  |  | compile time (first step − median step) | {precision} | {first - batch / median['difflab']:.1f} s |"
                    )


if __name__ == "__main__":
    main()
