"""Pixel against latent diffusion at the same training wall time: the same small CPU U-Net (conf/base_small_cpu.yaml,
as experiment=mnist_ldm_cpu) trained on the images and, for the same seconds of fitting, on the latents of an f4
autoencoder; each scored by evaluate.py (fd_effl0 of n decoded samples, DDIM 50, trailing, against --num-reference
images: MNIST's held-out digits, CelebA's training faces, see REFERENCE_SPLIT), with its training img/s, sampling
img/s (difflab.load(...).sample, one thread) and the training process's peak memory (max RSS).
Prints one markdown table; name the CPU beside it (`lscpu | grep 'Model name'`).

    # MNIST at 32 px against the 8x8x3 latents of the mnist_autoencoder_cpu run
    .venv/bin/python benchmarks/pixel_vs_latent.py --dataset mnist --autoencoder <mnist_autoencoder_cpu run> \\
        --root ../shared/data --wall-time-s 300 --n 1000
    # CelebA 64 px (a flat folder of faces) against 16x16x3 latents; without --autoencoder a small f4
    # autoencoder is trained first (experiment=celeba64_autoencoder_cpu; its time is printed, not counted in the
    # budget)
    .venv/bin/python benchmarks/pixel_vs_latent.py --dataset celeba64 --root data/celeba64 --wall-time-s 300

The autoencoder is trained once and reused by every latent run, so its time is stated beside the table, not added
to the latent run's budget (latent-diffusion and diffusers count it the same way).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from difflab.checkpoint import CONFIG_KEY  # noqa: E402

# The denoiser recipe shared by both sides (the latent side adds autoencoder=), and each dataset's data overrides.
DENOISER = ["experiment=mnist_ldm_cpu", "logger=csv", "callbacks.fid.at_train_end=false"]
DATASETS = {
    "mnist": ["data=mnist", "data.image_size=32"],
    "celeba64": ["data=folder", "data.image_size=64", "data.channels=3", "data.random_flip=false"],
}
# Each dataset's change to the denoiser: the recipe's attention at 8x8 is no level of a 64 px U-Net (64 -> 32 -> 16),
# so on faces both sides attend at 16x16 (the pixel net's lowest level, the latent net's highest).
UNET = {"mnist": [], "celeba64": ["model.attention_resolutions=[16]"]}
# The split fd_effl0 is scored against: MNIST's 10k test digits; the faces' held-out 5 % is only 500 images (fewer
# than --num-reference and than the 1,280 features), so their first --num-reference training faces.
REFERENCE_SPLIT = {"mnist": "val", "celeba64": "train"}
# A small f4 autoencoder for datasets without one (mnist_autoencoder_cpu's net on the dataset's images).
AUTOENCODER = {
    "mnist": ["experiment=mnist_autoencoder_cpu", "logger=csv"],
    "celeba64": ["experiment=celeba64_autoencoder_cpu", "logger=csv"],
}


def budget_overrides(wall_time_s: int) -> list[str]:
    """train.py overrides that stop fitting after wall_time_s seconds (Lightning's max_time) instead of at steps."""
    minutes, seconds = divmod(int(wall_time_s), 60)
    hours, minutes = divmod(minutes, 60)
    return ["trainer.max_steps=-1", f"+trainer.max_time='00:{hours:02d}:{minutes:02d}:{seconds:02d}'"]


def train(run: Path, overrides: list[str]) -> tuple[float, float]:
    """Run train.py into `run`; (wall seconds, peak resident MiB of that process)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run}", *overrides], cwd=ROOT
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"train.py failed ({process.returncode}) for {run}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024  # Linux reports KiB


def steps_and_batch(run: Path) -> tuple[int, int]:
    """The global step the run's last checkpoint reached and its batch size."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt["global_step"]), int(ckpt[CONFIG_KEY]["data"]["batch_size"])


def sampling_rate(run: Path, n: int) -> float:
    """Images/s of difflab.load(run).sample: n samples, DDIM 50, one thread (latents are decoded)."""
    import difflab

    pipe = difflab.load(run, device="cpu")
    pipe.sample(min(n, 8), sampler="ddim", steps=50, seed=1)  # warm-up: first calls allocate
    start = time.perf_counter()
    pipe.sample(n, sampler="ddim", steps=50, seed=0)
    return n / (time.perf_counter() - start)


def score(run: Path, n: int, reference: list[str], cache: Path) -> float:
    """evaluate.py's fd_effl0 of n samples of the run (DDIM 50, trailing) against the reference images that
    `reference` (reference_overrides) names."""
    from difflab.run.evaluate import evaluate

    with tempfile.TemporaryDirectory() as folder:
        overrides = [
            f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
            f"n={n}",
            "sampler=ddim",
            "sampler.steps=50",
            "sampler.timestep_spacing=trailing",
            "batch_size=250",
            "cpu_threads=1",
            "log_wandb=false",
            f"metrics.cache_dir={cache}",
            *reference,  # the same reference images for both sides
            f"out={Path(folder) / 'report.json'}",
        ]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            report = evaluate(compose("eval", overrides=overrides))
    return float(report["metrics"]["fd_effl0"])


def reference_overrides(dataset: str, num_reference: int) -> list[str]:
    """evaluate.py overrides naming the reference images: the first num_reference of the dataset's reference split."""
    return [f"metrics.reference_split={REFERENCE_SPLIT[dataset]}", f"metrics.num_reference={num_reference}"]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (sys.argv when None)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    parser.add_argument(
        "--root", required=True, help="data.root: ../shared/data for mnist, the faces' folder"
    )
    parser.add_argument("--autoencoder", default=None, help="an f4 autoencoder run (default: train one here)")
    parser.add_argument("--autoencoder-steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--wall-time-s", type=int, default=300, help="seconds of fitting for each side")
    parser.add_argument("--n", type=int, default=1000, help="samples scored per side")
    parser.add_argument(
        "--num-reference",
        type=int,
        default=2000,
        help="reference images (the feature net costs ~0.1 s each here)",
    )
    parser.add_argument("--sampling-n", type=int, default=200, help="samples timed per side")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_pixel_vs_latent"))
    return parser.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    torch.set_num_threads(1)
    out = Path(args.out) / args.dataset
    data = [*DATASETS[args.dataset], f"data.root={Path(args.root).resolve()}"]
    autoencoder = args.autoencoder
    if autoencoder is None:
        autoencoder = out / "autoencoder"
        steps = args.autoencoder_steps
        overrides = (
            [] if steps is None else [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"]
        )
        seconds, _ = train(autoencoder, [*AUTOENCODER[args.dataset], *data, *overrides])
        steps, _ = steps_and_batch(autoencoder)
        print(f"autoencoder: {steps} steps in {seconds:.0f} s (trained once, reused by the latent run)")
    sides = {
        "pixel": ["autoencoder_required=false"],
        "latent": [f"autoencoder={Path(autoencoder).resolve()}"],
    }
    rows = []
    for side, extra in sides.items():
        run = out / side
        denoiser = [*DENOISER, *UNET[args.dataset], *data, *extra]
        seconds, peak_mib = train(run, [*denoiser, *budget_overrides(args.wall_time_s)])
        steps, batch = steps_and_batch(run)
        rows.append(
            (
                side,
                steps,
                steps * batch / args.wall_time_s,
                sampling_rate(run, args.sampling_n),
                peak_mib,
                score(
                    run,
                    args.n,
                    reference_overrides(args.dataset, args.num_reference),
                    Path(args.out) / "metrics_cache",
                ),
                seconds,
            )
        )
    print(
        f"\n{args.dataset}: the same U-Net, {args.wall_time_s} s of fitting each, fd_effl0 on n={args.n} (DDIM 50) "
        f"against the first {args.num_reference} images of the {REFERENCE_SPLIT[args.dataset]} split"
    )
    print(
        "| side | steps | training img/s | sampling img/s | peak RSS (MiB) | fd_effl0 | train.py wall (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for side, steps, train_rate, sample_rate, peak, fd, seconds in rows:
        print(
            f"| {side} | {steps} | {train_rate:.0f} | {sample_rate:.1f} | {peak:.0f} | {fd:.2f} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
