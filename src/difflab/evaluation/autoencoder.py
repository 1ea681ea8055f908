"""evaluate.py on an autoencoder: reconstruct the held-out split of its data (or data=, metrics.reference_split=
when given) and score PSNR, SSIM and rFD (the reconstructions' features against the same images' statistics);
write the JSON report."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from ..autoencoder_checkpoint import LoadedAutoencoder
from ..checkpoint_config import build
from ..data.scoring import larger_split, reference_statistics
from ..io.results import write_json
from ..metrics import Evaluator
from .reconstruction import reconstruction_scores
from .report import reference_entry

log = logging.getLogger("difflab")


def held_out_batches(dataset: Any, n: int, batch_size: int) -> Any:
    """The first n images of `dataset` ([-1, 1] floats) in order, labels dropped."""
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    return (batch[0] if isinstance(batch, list | tuple) else batch for batch in loader)


def check_data_fits(net: Any, data: Any) -> None:
    """data= is reconstructed by the autoencoder: its images must have the channels it encodes and a size its down
    factor divides (one line, before anything is read or written)."""
    if data.channels != net.in_channels:
        raise ValueError(
            f"the autoencoder encodes {net.in_channels}-channel images, but data= gives {data.channels}-channel "
            f"ones: add data.channels={net.in_channels}"
        )
    if data.image_size % net.down_factor:
        raise ValueError(
            f"the autoencoder's down factor {net.down_factor} does not divide data.image_size={data.image_size}: "
            f"give a data.image_size that is a multiple of {net.down_factor}"
        )


def evaluate_autoencoder(
    loaded: LoadedAutoencoder,
    ckpt: str,
    n: int,
    batch_size: int | str | None,
    device: torch.device,
    metrics: dict[str, Any],
    path: Path,
    allowed_targets: tuple[str, ...] = (),
    or_next_free: bool = False,
    data: Any = None,
) -> dict[str, Any]:
    """Score the autoencoder `loaded` from `ckpt` on the first n images of the metrics' reference split (val unless
    set) of `data` (None: the data it was trained on); write the report to `path` (`or_next_free`: or the next
    free name, if another run took it meanwhile)."""
    if data is None:
        if "data" not in loaded.config:
            raise ValueError(
                f"{ckpt} records no dataset (a diffusers folder): add data=<the dataset to reconstruct> "
                "(e.g. data=mnist)"
            )
        data = build(loaded.config, "data", allowed_targets)
    check_data_fits(loaded.net, data)
    # Before, data= and metrics.reference_split= were ignored: the report named the run's own val split.
    split = metrics.get("reference_split", "val")
    held_out = data.dataset_for(split)
    count = min(int(n), len(held_out))
    if count < 2:
        raise ValueError(
            f"the {split} split of {data.dataset} has {len(held_out)} images; need at least 2{larger_split(split)}"
        )
    if count < int(n):  # before, the report said n=90 where n=5000 was asked, without a word
        log.warning(
            "n=%d, but the %s split of %s holds %d images: all %d are reconstructed and scored",
            int(n),
            "held-out" if split == "val" else split,
            data.dataset,
            count,
            count,
        )
    # rFD compares the reconstructions with the very images they reconstruct: the first `count` held-out ones.
    evaluator = dataclasses.replace(Evaluator(**metrics), reference_split=split, num_reference=count)
    evaluator.cpu_threads = evaluator.cpu_threads or torch.get_num_threads()
    start = time.perf_counter()
    reference, hit = reference_statistics(evaluator, data, device)
    size = 256 if batch_size in (None, "auto") else int(batch_size)
    batches = held_out_batches(held_out, count, size)
    scores = reconstruction_scores(loaded.net, batches, count, evaluator, reference, device)
    report = {
        "metrics": scores,
        "reconstructed": {
            "source": "autoencoder",
            "ckpt": str(ckpt),
            "global_step": loaded.global_step,
            "n": count,
            "weights_hash": loaded.weights_hash,
        },
        "reference": reference_entry(data, split, reference.n, hit),
        "metric_settings": evaluator.settings(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    path = write_json(report, path, or_next_free)
    log.info("%s -> %s", json.dumps(scores), path)
    return report
