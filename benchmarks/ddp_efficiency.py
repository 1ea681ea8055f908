"""2-process CPU DDP efficiency of difflab's own training path: throughput of 2 processes ÷ (2 × one process).

Runs `train.py` (Lightning's Trainer, difflab's callbacks) as a user would, one torch thread per process, the
same per-process batch, unet_small on the real digits data (scikit-learn's 8×8 digits, in memory):

    trainer=cpu                                  (1 process)
    trainer=ddp trainer.devices=2 trainer.accelerator=cpu  (2 processes, gloo)

with no grids, FID, validation, logger or progress bar (the EMA and the periodic checkpoint stay as
configured: --checkpoint-every). A tiny callback (TrainTimer, below, put on the callback list by the command
line) times the optimizer steps after --warmup steps to the last one on rank 0; images/s = measured steps ×
batch × processes / seconds. The two settings alternate for --rounds rounds; the table shows medians and the
spread, so a noisy shared machine hits both alike. Prints a markdown table.

    python benchmarks/ddp_efficiency.py [--steps 150 --warmup 20 --batch 64 --rounds 2]
    python benchmarks/ddp_efficiency.py --src /other/checkout/src   # time another checkout's difflab
    python benchmarks/ddp_efficiency.py --slurm   # SLURM_JOB_ID set: difflab handles SIGTERM itself

Needs at least 2 free cores: on fewer, the 2 processes share them and the figure measures the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
from machine import cpu_name
from timed_train import ROOT, run_train


class TrainTimer(L.Callback):
    """Writes {"steps", "seconds"} to `path` (rank 0): the optimizer steps after `warmup` to the end."""

    def __init__(self, path: str, warmup: int) -> None:
        self.path, self.warmup = Path(path), warmup
        self._start: float | None = None
        self._start_step = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if self._start is None and trainer.global_step >= self.warmup:
            self._start, self._start_step = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._start is not None:
            steps = trainer.global_step - self._start_step
            self.path.write_text(json.dumps({"steps": steps, "seconds": time.perf_counter() - self._start}))


def run(devices: int, args: argparse.Namespace, workdir: Path) -> float:
    """One train.py run; its images/s over the timed steps."""
    out = workdir / f"timing-{devices}-{time.monotonic_ns()}.json"
    trainer = (
        ["trainer=cpu"] if devices == 1 else ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    )
    overrides = [
        *trainer,
        "model=unet_small",
        f"data.batch_size={args.batch}",
        f"trainer.max_steps={args.steps}",
        f"callbacks.model_checkpoint.every_n_train_steps={args.checkpoint_every}",
        "+callbacks.timer._target_=ddp_efficiency.TrainTimer",
        f"+callbacks.timer.path={out}",
        f"+callbacks.timer.warmup={args.warmup}",
        f"hydra.run.dir={workdir / out.stem}",
    ]
    # SLURM_JOB_ID without SLURM_NTASKS: difflab's SIGTERM handling, not Lightning's SLURM environment.
    run_train(
        overrides, args.src, f"with {devices} process(es)", {"SLURM_JOB_ID": "1"} if args.slurm else None
    )
    timing = json.loads(out.read_text())
    return timing["steps"] * args.batch * devices / timing["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run (default 150)")
    parser.add_argument("--warmup", type=int, default=20, help="steps before timing starts (default 20)")
    parser.add_argument("--batch", type=int, default=64, help="per-process batch (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating 1-process/2-process rounds")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="model_checkpoint every n steps")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the difflab source folder to time")
    parser.add_argument("--slurm", action="store_true", help="set SLURM_JOB_ID (difflab handles SIGTERM)")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 0 and less than --steps")

    one: list[float] = []
    two: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            one.append(run(1, args, Path(tmp)))
            two.append(run(2, args, Path(tmp)))
            print(
                f"round {index + 1}: 1 process {one[-1]:.1f} img/s, 2 processes {two[-1]:.1f} img/s",
                flush=True,
            )

    def cell(values: list[float], digits: int = 1) -> str:
        median, low, high = statistics.median(values), min(values), max(values)
        return f"{median:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"

    ratios = [b / (2 * a) for a, b in zip(one, two, strict=True)]
    slurm = ", SLURM_JOB_ID set" if args.slurm else ""
    print(
        f"\n{cpu_name()}: unet_small, digits 8×8, batch {args.batch}/process, steps {args.warmup}–{args.steps} timed, "
        f"1 thread/process, {args.rounds} rounds, src {args.src}{slurm}\n"
    )
    print("| processes | images/s, median (min–max) |")
    print("| --- | --- |")
    print(f"| 1 | {cell(one)} |")
    print(f"| 2 (DDP, gloo) | {cell(two)} |")
    print(f"| efficiency = throughput_2 / (2 × throughput_1), per round | {cell(ratios, 2)} |")


if __name__ == "__main__":
    main()
