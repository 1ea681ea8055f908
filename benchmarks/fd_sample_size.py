"""How much the scores of real vs real images depend on the sample count n.

Two disjoint sets drawn from the same distribution (MNIST train vs MNIST test) should be at distance
~0; the number measured at n images is the estimator's bias at that n, the floor under which no
model's score can be read. Prints a markdown table (FD, KID, precision and recall at n = 1k, 5k, 10k).
--dataset digits does the same at the sizes the embedded digits allow (its 1,797 images split in two halves).

    python benchmarks/fd_sample_size.py --root ../shared/data [--extractor efficientnet_lite0]
    python benchmarks/fd_sample_size.py --dataset digits

Features are computed once (10k train + 10k test) and cached in --cache; every n reuses them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from difflab.data import ImageDataModule
from difflab.data.scoring import uint8_batches
from difflab.metrics import StatsAccumulator, frechet_distance, get_extractor, kernel_distance, metric_name
from difflab.metrics.distances import precision_recall

SIZES = {"mnist": (1_000, 5_000, 10_000), "digits": (64, 90, 250, 500, 898)}


def dataset(name: str, root: str) -> ImageDataModule:
    """MNIST (train vs test), or the embedded digits split in two halves (train vs held-out)."""
    if name == "digits":
        return ImageDataModule("digits", image_size=8, channels=1, val_fraction=0.5)
    return ImageDataModule("mnist", root=root, image_size=28, channels=1)


def features_of(split: str, args: argparse.Namespace) -> np.ndarray:
    """Features of the first max(sizes) images of a split, cached as .npy."""
    largest = max(SIZES[args.dataset])
    path = Path(args.cache) / f"{args.dataset}-{split}-{args.extractor}-{largest}.npy"
    if path.is_file():
        return np.load(path)
    data = dataset(args.dataset, args.root)
    extractor = get_extractor(args.extractor, weights_path=args.inception_weights, device=args.device)
    start = time.perf_counter()
    feats = [extractor(b).numpy() for b in uint8_batches(data.dataset_for(split), 200, limit=largest)]
    out = np.concatenate(feats)
    print(f"{split}: {len(out)} images in {time.perf_counter() - start:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def stats_of(features: np.ndarray, name: str):
    acc = StatsAccumulator(features.shape[1], name, keep_features=len(features))
    acc.update(torch.from_numpy(features))
    return acc.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SIZES), default="mnist")
    parser.add_argument("--root", default="../shared/data")
    parser.add_argument("--extractor", default="efficientnet_lite0")
    parser.add_argument("--inception-weights", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache", default="benchmarks/.cache")
    args = parser.parse_args()

    train, test = features_of("train", args), features_of("val", args)
    fd_key = metric_name(args.extractor)
    print(f"\n| n | {fd_key} ({args.dataset}, two disjoint real sets) | KID ×10³ | precision | recall |")
    print("|---:|---:|---:|---:|---:|")
    for n in SIZES[args.dataset]:
        a, b = stats_of(train[:n], args.extractor), stats_of(test[:n], args.extractor)
        kid, kid_std = kernel_distance(a, b, subset_size=min(1000, n))
        precision, recall = precision_recall(a, b)
        print(
            f"| {n:,} | {frechet_distance(a, b):.2f} | {kid * 1e3:.2f} ± {kid_std * 1e3:.2f} "
            f"| {precision:.3f} | {recall:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
