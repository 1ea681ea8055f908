"""Deterministic random hold-out split for sources that ship without a test split."""

from __future__ import annotations

import numpy as np

from difflab.data.errors import DataError


def holdout_split(n: int, val_fraction: float, seed: int, source: str) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into sorted (train, val) index lists; val holds ``round(n * val_fraction)``, and at
    least one image when ``val_fraction`` > 0 and there are two or more (so a tiny folder still trains)."""
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    if n_val < 1:
        raise DataError(
            f"validation split of {source} is empty: {n} images x val_fraction={val_fraction} rounds to 0; "
            "raise data.val_fraction or add images"
        )
    if n_val >= n:
        raise DataError(
            f"training split of {source} is empty: val_fraction={val_fraction} holds out all {n} images"
        )
    # numpy's PCG64 stream is stable across releases, so a seed names the same split everywhere.
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
