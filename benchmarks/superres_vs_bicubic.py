"""SR3 against bicubic upsampling on held-out images: realism (FD, KID) and consistency with the input.

The first --n images of the checkpoint's held-out split (MNIST: the test digits) are downsampled by the model's
sr_factor exactly as in training; each low-res input is super-resolved once by the checkpoint (seeded DDIM, one
row per --eta; --consistency adds rows with data consistency, diffusion.data_consistency) and once by bicubic
upsampling. Every set is scored against the real high-resolution images with the project's
metrics (EfficientNet-Lite0 features: fd_effl0, KID); a second set of n real held-out images (the next n)
gives the floor of the estimator at this n. Consistency: ‖down(x) − input‖ in [-1, 1] units (mean |·| and
RMSE); pixel RMSE to the real image is shown for reference (realism is what FD and KID measure).
Prints a markdown table.

    python benchmarks/superres_vs_bicubic.py --ckpt <run>/checkpoints/last.ckpt --root ../shared/data \
        --eta 0 1 --consistency 1
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra.utils import instantiate

from difflab.checkpoint import load_model
from difflab.diffusion import DDIMSampler
from difflab.diffusion.superres import downsample, upsample
from difflab.generation.model import sr_factor
from difflab.generation.superres import super_resolve
from difflab.io.write_images import to_uint8
from difflab.metrics.evaluator import Evaluator


def held_out(config: dict, root: str | None, start: int, n: int) -> torch.Tensor:
    """Images start..start+n-1 of the checkpoint's held-out split, as in training (no flips)."""
    data_cfg = {**config["data"], "root": root or config["data"].get("root"), "condition": None}
    val = instantiate(data_cfg).dataset_for("val")
    if len(val) < start + n:
        raise SystemExit(f"the held-out split has {len(val)} images; --n {n} needs {start + n}")
    return torch.stack([val[i][0] for i in range(start, start + n)])


def consistency(x: torch.Tensor, low: torch.Tensor, factor: int) -> tuple[float, float]:
    diff = downsample(x, factor) - low
    return float(diff.abs().mean()), float(diff.pow(2).mean().sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--root", default=None, help="data.root (default: the checkpoint's)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--eta", type=float, nargs="+", default=[1.0], help="DDIM η of each SR3 row")
    parser.add_argument(
        "--consistency", type=float, nargs="*", default=[], help="η of each SR3 row with data consistency"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    loaded = load_model(args.ckpt, torch.device(args.device))
    if loaded.condition != "superres":
        raise SystemExit(f"{args.ckpt} is not a super-resolution checkpoint")
    factor, size = sr_factor(loaded), loaded.sample_shape[-1]
    real = held_out(loaded.config, args.root, 0, args.n)
    other_real = held_out(loaded.config, args.root, args.n, args.n)
    low = downsample(real, factor)

    rows, seconds = [], []
    runs = [(eta, False) for eta in args.eta] + [(eta, True) for eta in args.consistency]
    for eta, consistent in runs:
        sampler = DDIMSampler(
            loaded.schedule, steps=args.steps, eta=eta, prediction_type=loaded.prediction_type
        )
        start = time.perf_counter()
        sr = super_resolve(
            sampler, loaded.net, low.to(args.device), size, 1, args.seed, args.batch_size,
            consistency=consistent,
        ).cpu()  # fmt: skip
        seconds.append(f"{time.perf_counter() - start:.0f}")
        label = f"SR3 (DDIM {args.steps} steps, η = {eta:g}{', data consistency' if consistent else ''})"
        rows.append((label, sr, True))
    rows.append(("bicubic", upsample(low, size), True))
    rows.append((f"real (held-out images {args.n}..{2 * args.n - 1})", other_real, False))

    evaluator = Evaluator(kid_subset_size=min(1000, args.n // 2), prc=False, cpu_threads=0)
    reference = evaluator.statistics(evaluator.embed(to_uint8(real), args.device)[0])
    print(
        f"\n{args.n} held-out images {size // factor}×{size // factor} → {size}×{size}; "
        f"reference: the real {size}×{size} images; SR3 sampling {', '.join(seconds)} s on {args.device}\n"
    )
    print("| method | fd_effl0 ↓ | KID ×10³ ↓ | ‖down(x) − input‖ mean abs ↓ | RMSE ↓ | pixel RMSE to real |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, images, from_input in rows:
        features, _ = evaluator.embed(to_uint8(images), args.device)
        scores = evaluator.scores(evaluator.statistics(features), reference)
        mean_abs, rmse = consistency(images, low, factor) if from_input else (None, None)
        pixel = float((images - real).pow(2).mean().sqrt()) if from_input else None
        cells = [
            label,
            f"{scores[evaluator.fd_key]:.2f}",
            f"{scores['kid'] * 1e3:.2f} ± {scores['kid_std'] * 1e3:.2f}",
            "–" if mean_abs is None else f"{mean_abs:.4f}",
            "–" if rmse is None else f"{rmse:.4f}",
            "–" if pixel is None else f"{pixel:.3f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
