"""Does bf16 mixed precision train as fp32 does? The digits recipe run three times from the same seed's data:
fp32, `trainer.precision=bf16-mixed`, and fp32 with another seed (the noise a change of seed alone makes).
The table gives the mean training loss per window of steps and the final validation loss of each; bf16 matches
when its gap to fp32 is no larger than the gap between the two fp32 seeds. Also the wall time of each run.

    .venv/bin/python benchmarks/bf16_loss_curve.py                  # 1,000 steps each, ~3 × 2.5 min on 2 cores
    .venv/bin/python benchmarks/bf16_loss_curve.py --steps 3000 --window 500
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from difflab.runlogs import run_series  # noqa: E402

RUNS = {  # label: overrides
    "fp32 (seed 0)": ["seed=0"],
    "bf16-mixed (seed 0)": ["seed=0", "trainer.precision=bf16-mixed"],
    "fp32 (seed 1)": ["seed=1"],
}


def run(overrides: list[str], steps: int, folder: Path) -> tuple[dict, float]:
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=digits_cpu",
        "callbacks.fid=null",
        "callbacks.sample_grid=null",
        "logger=none",  # the run's metrics.jsonl is all this reads
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "trainer.log_every_n_steps=10",
        f"hydra.run.dir={folder}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return run_series(folder), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--window", type=int, default=200)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="difflab-bf16-") as tmp:
        for index, (label, overrides) in enumerate(RUNS.items()):
            results[label] = run(overrides, args.steps, Path(tmp) / str(index))
    windows = range(0, args.steps, args.window)
    header = [f"steps {w + 1}–{w + args.window}" for w in windows]
    print(f"digits recipe, {args.steps} steps, mean train/loss per window\n")
    print(f"| run | {' | '.join(header)} | final val/loss | wall s |")
    print(f"| --- | {' | '.join('---' for _ in header)} | --- | --- |")
    for label, (series, seconds) in results.items():
        losses = series["train/loss"]
        means = [statistics.mean(v for s, v in losses if w <= s < w + args.window) for w in windows]
        val = series["val/loss"][-1][1]
        print(f"| {label} | {' | '.join(f'{m:.4f}' for m in means)} | {val:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
