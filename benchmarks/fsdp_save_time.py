"""Time per checkpoint save under trainer=fsdp, 2 CPU processes (gloo): full (gathered on rank 0, one file) vs
sharded (every rank writes its own shards, one folder), and the checkpoint's size on disk.

Runs `train.py` as a user would: trainer=fsdp trainer.devices=2, one torch thread per process, a DiT on the real
digits data (scikit-learn's 8×8 digits, in memory), a checkpoint every step (step_<n>.ckpt and last.ckpt, so two
saves per step) and no grids, FID, validation or logger. A tiny callback (SaveTimer, below, put on the callback
list by the command line) wraps Trainer.save_checkpoint on rank 0: a save is timed from the call (which gathers or
collects the state: weights, EMA, Adam's moments) to its return after every rank has written. The two kinds
alternate for --rounds rounds; the table gives the median and the spread of every save, so a noisy shared
machine hits both alike. Prints a markdown table.

    python benchmarks/fsdp_save_time.py [--model dit_s2 --steps 4 --rounds 2]

Needs at least 2 free cores to measure the ranks writing at once; on fewer they share them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
from machine import cpu_name
from timed_train import ROOT, run_train

KINDS = ("full", "sharded")


class SaveTimer(L.Callback):
    """Writes the seconds of every Trainer.save_checkpoint call of the run to `path` (rank 0), as a JSON list."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.seconds: list[float] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        save = trainer.save_checkpoint

        def timed_save(*args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            save(*args, **kwargs)  # a collective: returns on rank 0 after the barrier that ends every save
            self.seconds.append(time.perf_counter() - start)

        trainer.save_checkpoint = timed_save  # type: ignore[method-assign]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(self.seconds))


def size_on_disk(checkpoint: Path) -> dict[str, int]:
    """Bytes of each file of `checkpoint` (a file, or a sharded folder's files)."""
    files = sorted(checkpoint.iterdir()) if checkpoint.is_dir() else [checkpoint]
    return {f.name: f.stat().st_size for f in files}


def run(kind: str, args: argparse.Namespace, workdir: Path) -> tuple[list[float], dict[str, int]]:
    """One train.py run saving `kind` checkpoints; the seconds of each save and the files of last.ckpt."""
    out = workdir / f"saves-{kind}-{time.monotonic_ns()}.json"
    run_dir = workdir / out.stem
    overrides = [
        "trainer=fsdp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"trainer.strategy.state_dict_type={kind}",
        f"model={args.model}",
        f"data.batch_size={args.batch}",
        "lr_scheduler=none",
        f"trainer.max_steps={args.steps}",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "+callbacks.timer._target_=fsdp_save_time.SaveTimer",
        f"+callbacks.timer.path={out}",
        f"hydra.run.dir={run_dir}",
    ]
    run_train(overrides, args.src, f"with state_dict_type={kind}")
    return json.loads(out.read_text()), size_on_disk(run_dir / "checkpoints" / "last.ckpt")


def readable(size: int) -> str:
    """Bytes as MB, or kB below 1 MB."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dit_s2", help="model config (default dit_s2)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run, one checkpoint each")
    parser.add_argument("--batch", type=int, default=4, help="per-process batch (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating full/sharded rounds")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the difflab source folder to time")
    args = parser.parse_args()

    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    files: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            for kind in KINDS:
                times, files[kind] = run(kind, args, Path(tmp))
                seconds[kind] += times
                print(
                    f"round {index + 1}, {kind}: {len(times)} saves, median {statistics.median(times):.2f} s"
                )

    print(
        f"\n{cpu_name()}: {args.model}, digits 8×8, trainer=fsdp on 2 CPU processes (gloo), 1 thread/process, a checkpoint "
        f"(weights, EMA, Adam state) every step, {args.steps} steps × {args.rounds} rounds, src {args.src}\n"
    )
    print("| `state_dict_type` | seconds per save, median (min–max) | saves | last.ckpt on disk |")
    print("| --- | --- | --- | --- |")
    for kind in KINDS:
        times = seconds[kind]
        total = sum(files[kind].values())
        parts = ", ".join(f"{name} {readable(size)}" for name, size in files[kind].items())
        disk = readable(total) if len(files[kind]) == 1 else f"{readable(total)} ({parts})"
        spread = f"{statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f})"
        print(f"| `{kind}` | {spread} | {len(times)} | {disk} |")


if __name__ == "__main__":
    main()
