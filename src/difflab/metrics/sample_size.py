"""When a score is mostly its estimator's small-sample error, and the one-line warning that says so.

The sizes come from benchmarks/fd_sample_size.py (README "Sample count"): two disjoint sets of real images,
EfficientNet-Lite0 features. The Fréchet distance falls with n (MNIST: 4.54 at 1,000 images each, 0.73 at
10,000; the digits: 13.8 at 90); precision and recall rise as the sets shrink (the digits: precision 0.94 at 64,
0.84 at 898), since k-nearest-neighbour balls widen; KID is unbiased, about 0 at every size measured."""

from __future__ import annotations

# fd_effl0 of two disjoint sets of real images of these sizes (README "Sample count").
FD_FLOOR = {"digits": {90: 13.8}, "MNIST": {1_000: 4.54, 5_000: 1.19, 10_000: 0.73}}
PRECISION_REAL = {64: 0.94, 898: 0.84}  # precision of real digits against real digits at these sizes
STABLE_FD = 10_000  # images on each side for a Fréchet distance near its floor (the FID callback's default n)
STABLE_PR = 1_000  # below this, precision/recall still move with n


def small_sample_warning(
    n: int, reference: int, fd_key: str, feature_dim: int, prc: bool = True
) -> str | None:
    """A warning naming the scores that n samples against `reference` images cannot give stably, with the sizes
    that do; None when both sets are large enough."""
    smallest = min(n, reference)
    if smallest >= STABLE_FD:
        return None
    floors = "; ".join(
        f"{name} " + ", ".join(f"{value} at {size:,}" for size, value in sizes.items())
        for name, sizes in FD_FLOOR.items()
    )
    parts = [
        f"{fd_key} is biased upwards at this size (two disjoint sets of real images, each of the size given: "
        f'{floors}; README "Sample count")'
    ]
    if smallest < feature_dim:
        parts.append(f"with fewer images than its {feature_dim:,} features its covariances are singular")
    if prc and smallest < STABLE_PR:
        real = ", ".join(f"{value} at {size}" for size, value in PRECISION_REAL.items())
        parts.append(f"precision/recall are inflated at this size (real digits against real digits: {real})")
    return (
        f"n={n} samples against {reference:,} reference images: {'; '.join(parts)}. For stable numbers use "
        f"n={STABLE_FD} against at least {STABLE_FD:,} reference images and compare runs only at equal n; "
        "kid is unbiased at any size (read it with kid_std)"
    )
