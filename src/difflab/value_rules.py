"""Rules for values a user types (a value -> what is wrong with it, or None), and the check that names the first
key breaking its rule in one line. Plain Python: run/ holds a config to them, generation/ a Python caller's
arguments, in the same words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

Rule = Callable[[Any], str | None]  # a value -> what is wrong with it (None when it is fine)


def whole(minimum: int, nullable: bool = False, maximum: int | None = None) -> Rule:
    """A whole number >= minimum (and <= maximum when given; None allowed when nullable)."""

    def rule(value: Any) -> str | None:
        if value is None:
            return None if nullable else "must be set"
        if isinstance(value, float) and value.is_integer() and rule(int(value)) is None:
            # Before, n=1e3 was "n=1000.0 is not a whole number": true of what the parser made, not of what was meant.
            return f"is not a whole number: 1e3 and 2.0 are read as decimals; write {int(value)}"
        if isinstance(value, bool) or not isinstance(value, int):
            return "is not a whole number"
        if maximum is not None and value > maximum:
            return f"must be at most {maximum}"
        return None if value >= minimum else f"must be at least {minimum}"

    return rule


def number(minimum: float, above: bool = False, nullable: bool = False, maximum: float | None = None) -> Rule:
    """A finite number >= minimum (> minimum when `above`; <= maximum when given; None allowed when nullable)."""

    def rule(value: Any) -> str | None:
        if value is None:
            return None if nullable else "must be set"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "is not a number"
        if not math.isfinite(value):
            return "must be a finite number"
        if maximum is not None and value > maximum:
            return f"must be at most {maximum:g}"
        ok = value > minimum if above else value >= minimum
        return None if ok else f"must be {'above' if above else 'at least'} {minimum}"

    return rule


def flag(value: Any) -> str | None:
    """A rule: true or false."""
    return None if isinstance(value, bool) else "is not true or false"


def image_channels(value: Any) -> str | None:
    """A rule: the channels of a picture mode, 1 (L), 3 (RGB) or 4 (RGBA)."""
    if isinstance(value, bool) or value not in (1, 3, 4):
        return "must be 1 (L), 3 (RGB) or 4 (RGBA)"
    return None


def one_of(*choices: str) -> Rule:
    """One of the given words."""

    def rule(value: Any) -> str | None:
        return None if value in choices else f"is not one of {', '.join(choices)}"

    return rule


def or_auto(rule: Rule) -> Rule:
    """`rule`, or the word auto (null too: both let the program choose)."""

    def either(value: Any) -> str | None:
        if value is None or value == "auto":
            return None
        problem = rule(value)
        return None if problem is None else f"{problem} (or auto)"

    return either


# A sampler's settings (conf/sampler/*.yaml; the keywords of pipe.sample): sample.py, evaluate.py and train.py
# check them as sampler.<key>.
SAMPLER_RULES = {
    "steps": whole(1, nullable=True),
    "eta": number(0.0),
    "clip_x0": or_auto(number(0.0, above=True, nullable=True)),
    "s_churn": number(0.0),  # Heun's (EDM's) churn settings
    "s_tmin": number(0.0),
    "s_tmax": number(0.0, nullable=True),
    "s_noise": number(0.0),
}


def reference_count(value: Any) -> str | None:
    """A rule for metrics.num_reference: a whole number of reference images >= 1, or None for the whole split (0
    was read as the whole split, by accident)."""
    problem = whole(1, nullable=True)(value)
    return f"{problem}, or null for the whole split" if problem == "must be at least 1" else problem


# How generated images are scored (conf/metrics/*.yaml; difflab.metrics.Evaluator's fields): evaluate.py and
# train.py's FID callback check them as metrics.<key>. A word for a flag was truthy (prc=no computed precision and
# recall); no KID subset gave NaN scores.
METRIC_RULES = {
    "num_reference": reference_count,
    "keep_features": whole(0),
    "kid_subsets": whole(1),
    "kid_subset_size": whole(1),
    "prc": flag,
    "inception_score": flag,
    "isc_splits": whole(1),
    "batch_size": whole(1),
    "cpu_threads": whole(0, nullable=True),
}


def check_inception_score_samples(samples: int, splits: int, samples_key: str) -> None:
    """One line when the Inception Score would have fewer samples than splits (one per split): before, the
    samples were generated and embedded, and the run failed with no report."""
    if samples < splits:
        raise ValueError(
            f"{samples_key}={samples} is too few for the Inception Score (metrics.inception_score=true): it needs "
            f"at least metrics.isc_splits={splits} samples (one per split); raise {samples_key} or lower "
            "metrics.isc_splits"
        )


def held_out_share(value: object) -> str | None:
    """A rule for data.val_fraction: the share of the images held out for validation, in [0, 1) (0 is refused by
    the data where it would hold out no image: a dataset or folder with its own split does not use it)."""
    problem = number(0.0)(value)
    if problem:
        return problem
    return "must be below 1 (the share of the images held out for validation)" if value >= 1 else None


# A dataset's settings (conf/data/*.yaml): train.py and evaluate.py (its reference data=) check them as data.<key>.
DATA_RULES = {
    "image_size": whole(1),
    "channels": image_channels,  # before, a word was reported as model.in_channels, which copies it
    "batch_size": whole(1),
    "num_workers": whole(0),
    "random_flip": flag,
    "download": flag,  # before, a word was truthy (data.download=no fetched the dataset)
    "pin_memory": flag,
    "persistent_workers": flag,
    "val_fraction": held_out_share,
    "split_seed": whole(0),
}


# RePaint's settings (sample.py mode=inpaint; pipe.sample's inpaint={…}).
INPAINT_RULES = {f"inpaint.{key}": whole(1) for key in ("steps", "jump_length", "jump_n_sample")}


def check_named(values: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """One line naming the first key of `values` whose value breaks its rule (keys absent from values are skipped)."""
    for key, rule in rules.items():
        if key not in values:
            continue
        value = values[key]
        problem = rule(value)
        if problem:
            # Plain numbers as typed; anything else (a string, a tensor) as repr shows it, so that "guidance=2.0
            # is not a number" never names a tensor(2.) or the string "2.0".
            plain = value is None or type(value) in (int, float, bool)
            raise ValueError(f"{key}={value} {problem}" if plain else f"{key}={value!r} {problem}")


# The precisions generation runs the network under (diffusion.precision): fp32, or bf16 autocast.
PRECISIONS = ("fp32", "bf16")


def check_strength(strength: float) -> None:
    """A one-line error unless strength is a number in (0, 1]: not true (before, strength 1.0) nor the text "0.5"
    (as guidance and steps refuse them); a NumPy or torch number is one."""
    try:
        value = strength.item() if hasattr(strength, "item") else strength
    except (RuntimeError, ValueError):  # an array of several numbers
        value = None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"strength={strength!r} is not a number")
    if not 0 < value <= 1:  # also refuses NaN
        raise ValueError(f"strength must be in (0, 1] (got {strength})")
