"""What a user is told while a request runs: one log line saying what is about to be generated, and the progress
of sampling and super-resolving."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ..progress import Progress
from ..sample_options import SUPERRES, SampleOptions
from .model import TrainedModel
from .request import GenerationRequest


def log_line(options: SampleOptions, loaded: TrainedModel, request: GenerationRequest) -> tuple[Any, ...]:
    """What is about to be generated, in one log line."""
    method, pictures = request.method, request.pictures
    if options.mode == "sample":
        what = "sampling %d images with %s (%s weights, step %d)"
        return what, options.n, sampler_text(method.sampler, loaded), loaded.weights, loaded.global_step
    assert pictures is not None
    if options.mode == SUPERRES:
        return (
            "superres: %d picture(s) %s -> %d×%d, %d output(s) each with %s%s",
            len(pictures.paths),
            "×".join(str(s) for s in pictures.images.shape[-2:]),
            *request.sample_shape[-2:],
            options.n,
            sampler_text(method.sampler, loaded),
            ", projected onto down(output) = input" if options.consistency else "",
        )
    what = "%s: %d picture(s) × %d edits, %d model calls each"
    return what, options.mode, len(pictures.paths), options.n, method.nfe


# The formulations whose network's target is their own: the sampler integrates an ε view of it.
OWN_TARGET = {"EDM": "edm", "Flow": "flow"}


def sampler_text(sampler: Any, loaded: TrainedModel) -> str:
    """The sampler as the log line names it; for an edm or flow model its formulation, not the prediction_type of
    the ε view the sampler sees (before: prediction_type='epsilon', which that config says does not apply)."""
    text = repr(sampler)
    target = str((loaded.config.get("formulation") or {}).get("_target_", ""))
    name = OWN_TARGET.get(target.rsplit(".", 1)[-1])
    if name is not None:
        text = text.replace(f"prediction_type={sampler.prediction_type!r}", f"formulation={name}")
    return text


@contextlib.contextmanager
def progress(options: SampleOptions, count: int, steps: int) -> Iterator[Callable[[], None] | None]:
    """The progress of sampling and super-resolving `count` images in `steps` sampler steps (images/s); edits
    show none."""
    if options.mode in ("inpaint", "img2img"):
        yield None
        return
    what = f"sampling {count} images" if options.mode == "sample" else f"super-resolving {count} images"
    with Progress(what, steps, "steps", per_unit=("images", count / max(steps, 1))) as shown:
        yield shown.advance
