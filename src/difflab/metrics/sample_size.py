"""When a score is mostly its estimator's small-sample error, and the one-line warning that says so.

The sizes come from benchmarks/fd_sample_size.py (README "Sample count"): two disjoint sets of real MNIST digits
are at fd_effl0 4.54 with 1,000 images each, 1.19 with 5,000 and 0.73 with 10,000, while KID (unbiased) is
already about 0 at 1,000."""

from __future__ import annotations

# fd_effl0 of MNIST train vs test at n images each (README "Sample count", benchmarks/fd_sample_size.py).
FD_FLOOR = {1_000: 4.54, 5_000: 1.19, 10_000: 0.73}
STABLE_FD = 10_000  # images on each side for a Fréchet distance near its floor (the FID callback's default n)
STABLE_KID_PR = 1_000  # KID's subset size; k-NN precision/recall on fewer have radii set by chance


def small_sample_warning(
    n: int, reference: int, fd_key: str, feature_dim: int, kid: bool = True, prc: bool = True
) -> str | None:
    """A warning naming the scores that n samples against `reference` images cannot give stably, with the sizes
    that do; None when both sets are large enough."""
    smallest = min(n, reference)
    if smallest >= STABLE_FD:
        return None
    floors = ", ".join(f"{value} at {size:,}" for size, value in FD_FLOOR.items())
    parts = [
        f"{fd_key} is biased upwards at this size (two sets of real MNIST digits: {floors} images each; "
        'README "Sample count")'
    ]
    if smallest < feature_dim:
        parts.append(f"with fewer images than its {feature_dim:,} features its covariances are singular")
    small_kid_pr = [name for name, on in (("kid", kid), ("precision/recall", prc)) if on]
    if smallest < STABLE_KID_PR and small_kid_pr:
        parts.append(f"{' and '.join(small_kid_pr)} need at least {STABLE_KID_PR:,} images on each side")
    return (
        f"n={n} samples against {reference:,} reference images: {'; '.join(parts)}. For stable numbers use "
        f"n={STABLE_FD} against at least {STABLE_FD:,} reference images; compare runs only at equal n"
    )
