"""The framework's cost: train.py's steps/s (data, EMA, clipping, logging, grids, validation and checkpoints as
the recipe configures them) against the bare step on synthetic tensors (forward, ε-MSE, backward, Adam) of the
same network, batch, precision and threads. overhead = bare steps/s ÷ train.py steps/s − 1.

train.py runs in a subprocess with a timing callback (this file's StepTimer) added from the command line; its
clock starts after `--warmup` steps (first-step allocation, compile) and stops as the last step starts, so the
periodic work inside the window (grids, validation, checkpoints at their configured intervals) counts and the
one-off work at the end of a run (final grid and checkpoint: a minute of the CIFAR net, which an 800k-step run
pays once) does not. The bare step includes gradient clipping where the recipe clips (it is part of the
optimizer's update, as in diffusers' training scripts) and is timed before and after the run; the faster of the
two is kept, so a machine that got busier during the run does not flatter the framework.

    .venv/bin/python benchmarks/loop_overhead.py                          # digits recipe, 1,000 steps
    .venv/bin/python benchmarks/loop_overhead.py --recipe cifar10 --steps 40 --data-root data/cifar10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from machine import machine_line

ROOT = Path(__file__).resolve().parents[1]

# recipe: overrides of train.py (the FID callback off: its one final score is evaluation, not training)
RECIPES = {
    "digits": ["experiment=digits_cpu", "callbacks.fid=null"],
    "cifar10": ["experiment=cifar10_ddpm", "trainer=cpu", "data.batch_size=16", "callbacks.fid=null"],
}


class StepTimer(L.Callback):
    """Writes {"steps", "seconds"} to `path`: the steps from `warmup` to the start of the last one."""

    def __init__(self, path: str, warmup: int) -> None:
        self.path, self.warmup = Path(path), warmup
        self.start: float | None = None
        self.first_step = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if self.start is None and step >= self.warmup:
            self.start, self.first_step = time.perf_counter(), step
        elif self.start is not None and step == trainer.max_steps - 1 and trainer.is_global_zero:
            seconds = time.perf_counter() - self.start
            self.path.write_text(json.dumps({"steps": step - self.first_step, "seconds": seconds}))


def train_rate(overrides: list[str], steps: int, warmup: int, out: Path) -> float:
    """train.py's optimizer steps per second after the warm-up, from a subprocess."""
    timing = out / "timing.json"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *overrides,
        f"trainer.max_steps={steps + warmup + 1}",
        f"hydra.run.dir={out / 'run'}",
        "+callbacks.step_timer._target_=loop_overhead.StepTimer",
        f"+callbacks.step_timer.path={timing}",
        f"+callbacks.step_timer.warmup={warmup}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT / "src")])}
    env.setdefault("WANDB_MODE", "offline")
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    result = json.loads(timing.read_text())
    return result["steps"] / result["seconds"]


def bare_rate(overrides: list[str], steps: int) -> float:
    """Steps per second of forward + loss + backward (+ clipping) + Adam on random tensors shaped like the recipe's
    batch."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    from difflab.diffusion import DiffusionLoss

    device = "cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    net = instantiate(cfg.model).to(device)
    if cfg.get("channels_last", True):
        net = net.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optim)(net.parameters())
    loss_fn = DiffusionLoss(instantiate(cfg.schedule), cfg.prediction_type)
    d = cfg.data
    x0 = torch.randn(d.batch_size, d.channels, d.image_size, d.image_size, device=device)
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    clip = cfg.trainer.get("gradient_clip_val")

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net, x0)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="digits")
    parser.add_argument("--steps", type=int, default=1000, help="timed train.py steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--bare-steps", type=int, default=None, help="default: a fifth of --steps")
    parser.add_argument("--data-root", default=None, help="data.root for recipes that read files")
    parser.add_argument(
        "overrides", nargs="*", help="more train.py overrides, e.g. trainer.precision=bf16-mixed"
    )
    args = parser.parse_args()
    overrides = [*RECIPES[args.recipe], *args.overrides]
    if args.data_root:
        overrides.append(f"data.root={Path(args.data_root).resolve()}")
    bare_steps = args.bare_steps or max(10, args.steps // 5)
    before = bare_rate(overrides, bare_steps)
    with tempfile.TemporaryDirectory(prefix="difflab-overhead-") as tmp:
        loop = train_rate(overrides, args.steps, args.warmup, Path(tmp))
    bare = max(before, bare_rate(overrides, bare_steps))
    print(f"{machine_line()}; recipe {args.recipe}: {' '.join(overrides)}\n")
    print("| what | steps/s | s/step |")
    print("| --- | --- | --- |")
    print(f"| bare step (synthetic batch) | {bare:.2f} | {1 / bare:.4f} |")
    print(f"| train.py, {args.steps} steps | {loop:.2f} | {1 / loop:.4f} |")
    print(f"\nframework overhead: {100 * (bare / loop - 1):.1f} %")


if __name__ == "__main__":
    main()
