"""End-to-end generation, images per second, difflab against diffusers at equal NFE on the same network (the
weights are mapped, so both compute the same function): difflab through its public generation path
(difflab.diffusion.generate.generate, what sample.py and difflab.load(...).sample call), diffusers through
DDIMPipeline / DDPMPipeline and a loop of UNet2DModel with its DPMSolverMultistep, Euler and Heun schedulers
(as its docs write it). Rounds alternate between the two, so a noisy machine hits both alike; the table gives
medians, min–max and the ratio difflab / diffusers. Same start noise shape, batch, schedule (linear, T=1000).

    .venv/bin/python benchmarks/samplers_vs_diffusers.py                       # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/samplers_vs_diffusers.py --precision fp32 bf16 --nets digits cifar10 --rounds 5
On a machine shared with other work use --threads 1: OpenMP threads that find their cores busy spin, and a
2-thread forward measured here took 40× as long as a 1-thread one while other processes ran.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from contextlib import nullcontext

import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UNet2DModel,
)
from machine import device_name
from unet_vs_diffusers import models, timed

from difflab.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    EulerSampler,
    HeunSampler,
    NoiseSchedule,
)
from difflab.diffusion.generate import generate

NETS = {  # name: (label, model config, data overrides, batch)
    # digits_cpu's own model= option: a model= given beside the experiment replaces the one it picks.
    "digits": ("digits_cpu net 1×8×8", "unet_small_cpu", ["experiment=digits_cpu"], 64),
    "small": ("unet_small 1×32×32", "unet_small", ["data.image_size=32", "data.channels=1"], 8),
    "cifar10": (
        "unet_ddpm_cifar10 3×32×32",
        "unet_ddpm_cifar10",
        ["data.image_size=32", "data.channels=3"],
        8,
    ),
}
LINEAR = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
# name: (difflab sampler, diffusers scheduler, steps); NFE equal on both sides (Heun: 2·steps − 1 on both).
SAMPLERS = {
    "DDIM η=0": (
        lambda s, n: DDIMSampler(s, steps=n, eta=0.0),
        lambda: DDIMScheduler(**LINEAR, clip_sample=True, set_alpha_to_one=True, timestep_spacing="leading"),
        50,
    ),
    "DPM-Solver++(2M)": (
        lambda s, n: DPMSolverSampler(s, steps=n),
        lambda: DPMSolverMultistepScheduler(
            **LINEAR, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
        ),
        20,
    ),
    "DDPM (50 steps)": (
        lambda s, n: DDPMSampler(s, steps=n),
        lambda: DDPMScheduler(**LINEAR, clip_sample=True, variance_type="fixed_small"),
        50,
    ),
    "Euler": (
        lambda s, n: EulerSampler(s, steps=n),
        lambda: EulerDiscreteScheduler(**LINEAR, timestep_spacing="trailing"),
        50,
    ),
    "Heun": (
        lambda s, n: HeunSampler(s, steps=n),
        lambda: HeunDiscreteScheduler(**LINEAR, timestep_spacing="trailing"),
        18,
    ),
}


def autocast(device: str, precision: str):
    return (
        torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    )


def difflab_run(net, make, steps: int, shape: tuple, batch: int, precision: str) -> Callable[[], object]:
    sampler = make(NoiseSchedule.from_name("linear", 1000), steps)
    return lambda: generate(sampler, net, range(batch), shape, 0, batch, precision=precision)


def diffusers_run(
    unet: UNet2DModel, make_scheduler, steps: int, shape: tuple, batch: int, precision: str, device: str
) -> Callable[[], object]:
    """What a diffusers user writes: the pipeline where one exists (DDIM, DDPM), else the documented loop."""
    scheduler = make_scheduler()
    pipeline = {DDIMScheduler: DDIMPipeline, DDPMScheduler: DDPMPipeline}.get(type(scheduler))
    generator = torch.Generator(device).manual_seed(0)
    if pipeline is not None:
        pipe = pipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        extra = {"eta": 0.0} if pipeline is DDIMPipeline else {}

        def run_pipeline() -> object:
            with autocast(device, precision):
                return pipe(
                    batch_size=batch,
                    num_inference_steps=steps,
                    generator=generator,
                    output_type="np",
                    **extra,
                )

        return run_pipeline

    @torch.no_grad()
    def run_loop() -> object:
        scheduler.set_timesteps(steps, device=device)
        x = torch.randn((batch, *shape), generator=generator, device=device) * scheduler.init_noise_sigma
        with autocast(device, precision):
            for t in scheduler.timesteps:
                eps = unet(scheduler.scale_model_input(x, t), t).sample
                x = scheduler.step(eps, t, x).prev_sample
        return x

    return run_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", choices=NETS, default=["digits", "small"])
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    parser.add_argument(
        "--batch", type=int, default=None, help="images per batch (default: per net, see NETS)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"device {args.device} ({device_name(args.device)}), {args.threads} threads, {args.rounds} rounds each (alternating), medians\n"
    )
    print(
        "| network | batch | sampler | NFE | precision | difflab img/s (min–max) | diffusers img/s (min–max) | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in args.nets:
        label, name, data, batch = NETS[key]
        batch = args.batch or batch
        ours, theirs = models(name, data, args.device)
        # difflab's net as difflab.load and sample.py hold it (channels_last); diffusers' as its pipelines do.
        ours = ours.to(memory_format=torch.channels_last).eval()
        theirs.eval()
        label = f"{label} ({sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M)"
        shape = (ours.in_channels, ours.image_size, ours.image_size)
        for sampler_name in args.samplers:
            make_ours, make_theirs, steps = SAMPLERS[sampler_name]
            for precision in args.precision:
                nfe = make_ours(NoiseSchedule.from_name("linear", 1000), steps).nfe
                runs = {
                    "difflab": difflab_run(ours, make_ours, steps, shape, batch, precision),
                    "diffusers": diffusers_run(
                        theirs, make_theirs, steps, shape, batch, precision, args.device
                    ),
                }
                for run in runs.values():  # warm-up: allocator, kernels, lazy tables
                    run()
                times: dict[str, list[float]] = {k: [] for k in runs}
                for _ in range(args.rounds):
                    for side, run in runs.items():
                        times[side].append(timed(run, args.device))
                rate = {k: [batch / s for s in v] for k, v in times.items()}
                cells = [f"{statistics.median(r):.1f} ({min(r):.1f}–{max(r):.1f})" for r in rate.values()]
                ratio = statistics.median(rate["difflab"]) / statistics.median(rate["diffusers"])
                print(
                    f"| {label} | {batch} | {sampler_name} | {nfe} | {precision} | {cells[0]} | {cells[1]} "
                    f"| {ratio:.2f}× |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
