"""What post-hoc EMA costs on a net (default: the digits recipe's): training memory per tracked profile, one
snapshot file on disk, the time of one step's update of every profile, and the time to rebuild one σ_rel from a
run's snapshots. Prints a markdown table.

    .venv/bin/python benchmarks/phema.py                      # experiment=digits_cpu's net, 30 snapshots
    .venv/bin/python benchmarks/phema.py --experiment mnist_ddpm --snapshots 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from machine import cpu_name  # noqa: E402

from difflab.training.phema import (  # noqa: E402
    reconstruction_coefficients,
    sigma_rel_to_gamma,
    update_power_ema,
    weighted_sum,
)
from difflab.training.phema_snapshots import read_snapshot, write_snapshot  # noqa: E402

SIGMA_RELS = [0.05, 0.10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="digits_cpu")
    parser.add_argument("--snapshots", type=int, default=30, help="snapshots a run keeps")
    parser.add_argument("--updates", type=int, default=300, help="timed update steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={args.experiment}"])
    net = instantiate(cfg.model)
    state = net.state_dict()
    params = sum(p.numel() for p in net.parameters())
    profile_bytes = sum(v.numel() * v.element_size() for v in state.values())
    gammas = [sigma_rel_to_gamma(s) for s in SIGMA_RELS]
    averages = [{k: v.clone() for k, v in state.items()} for _ in gammas]
    floats = [k for k, v in state.items() if v.is_floating_point()]
    times = []
    for step in range(1, args.updates + 1):
        start = time.perf_counter()
        for average, gamma in zip(averages, gammas, strict=True):
            update_power_ema([average[k] for k in floats], [state[k] for k in floats], gamma, step)
        times.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as folder:
        paths = [
            write_snapshot(Path(folder), (i + 1) * 100, SIGMA_RELS, averages) for i in range(args.snapshots)
        ]
        file_bytes = paths[0].stat().st_size
        start = time.perf_counter()
        steps = [s for i in range(args.snapshots) for s in [(i + 1) * 100] * len(gammas)]
        x = reconstruction_coefficients(steps, gammas * args.snapshots, steps[-1], sigma_rel_to_gamma(0.07))
        pairs = (
            (read_snapshot(p)["states"][j], x[2 * i + j].item())
            for i, p in enumerate(paths)
            for j in range(2)
        )
        weighted_sum(pairs)
        rebuild = time.perf_counter() - start
    mb = 1e6
    print(f"CPU: {cpu_name()}\n")
    print(f"| {args.experiment} net: {params:,} parameters | |")
    print("| --- | --- |")
    print(f"| training memory per tracked profile (2 tracked) | {profile_bytes / mb:.2f} MB |")
    print(f"| one snapshot file (both profiles) | {file_bytes / mb:.2f} MB |")
    print(f"| {args.snapshots} snapshots on disk | {args.snapshots * file_bytes / mb:.1f} MB |")
    print(
        f"| update of both profiles per step (median of {args.updates}) | {statistics.median(times) * 1e3:.3f} ms |"
    )
    print(f"| rebuild one sigma_rel from {args.snapshots} snapshots | {rebuild:.2f} s |")


if __name__ == "__main__":
    main()
