"""What the latent cache saves: encoding a dataset with the autoencoder on the fly (every epoch) against encoding
it once into the cache and reading it back, on one thread. Prints a markdown table.

    .venv/bin/python benchmarks/latent_cache.py                                  # digits, a random mnist_autoencoder_cpu net
    .venv/bin/python benchmarks/latent_cache.py --ckpt <autoencoder run> --dataset mnist --root ../shared/data \\
        --image-size 28 --limit 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_name
from torch.utils.data import Subset

from difflab.autoencoder_checkpoint import load_autoencoder, weights_hash
from difflab.data import ImageDataModule
from difflab.data.latent_cache import cached_latents, data_fingerprint, encode_dataset
from difflab.models.autoencoder import AutoencoderKL


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", default=None, help="an autoencoder run or diffusers folder (default: random net)"
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--limit", type=int, default=1000, help="images of the train split")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--flips", action="store_true", help="cache the mirrored images' encodings too (data.random_flip)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.ckpt:
        net = load_autoencoder(args.ckpt).net
    else:  # the speed does not depend on the weights: mnist_autoencoder_cpu's architecture
        net = AutoencoderKL(
            args.channels,
            latent_channels=3,
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            norm_num_groups=8,
        ).eval()
    data = ImageDataModule(args.dataset, root=args.root, image_size=args.image_size, channels=args.channels)
    train = data.dataset_for("train")
    images = Subset(train, range(min(args.limit, len(train))))
    key, ae = data_fingerprint(images, args.dataset), weights_hash(net)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "latents.npz"
        # Warm-up: the first encode pays for allocations and kernel selection, which the cache's build would not.
        encode_dataset(net, Subset(images, range(min(args.batch_size, len(images)))), args.batch_size)
        _, on_the_fly = timed(lambda: encode_dataset(net, images, args.batch_size))
        (_, hit), build = timed(
            lambda: cached_latents(path, net, ae, images, key, args.batch_size, args.flips)
        )
        (latents, hit_again), read = timed(
            lambda: cached_latents(path, net, ae, images, key, args.batch_size, args.flips)
        )
        assert not hit and hit_again
        size_mb = path.stat().st_size / 2**20
    n = len(images)
    _, draw = timed(lambda: latents.sample(torch.arange(n)))
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} torch threads\n")
    print(
        f"| {args.dataset} {args.image_size}px → latents {tuple(latents.mean.shape[1:])}, {n} images | seconds |"
    )
    print("| --- | --- |")
    print(f"| encode on the fly, every epoch | {on_the_fly:.2f} ({n / on_the_fly:.0f} img/s) |")
    what = "encode originals and mirrors" if args.flips else "encode"
    print(f"| build the cache, once ({what} + write {size_mb:.2f} MB) | {build:.2f} |")
    print(f"| read the cache, each later run | {read:.3f} |")
    print(f"| draw z = mean + std·ε for the epoch | {draw:.3f} |")
    print(
        f"\nsaving per epoch after the first: {on_the_fly - draw:.2f} s ({on_the_fly / max(draw, 1e-9):.0f}x)"
    )


if __name__ == "__main__":
    main()
