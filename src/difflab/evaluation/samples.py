"""What is scored: a checkpoint's n samples (their conditions and the samples themselves, generated lazily in uint8
batches, with the settings that made them; continued where a stopped evaluation of the same settings left off) or a
folder or .npz of images read in batches."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checkpoint import LoadedModel
from ..cluster.processes import ONE_PROCESS, Processes, from_rank_0
from ..data import ImageDataModule
from ..diffusion import Sampler
from ..generation import (
    Conditions,
    Generation,
    SampleOptions,
    grid_conditions,
    requested_conditions,
    sampling_request,
)
from ..generation.autoguide import check_guide
from ..generation.class_names import model_class_names
from ..generation.finite import check_finite
from ..generation.model import model_kind, sr_factor
from ..generation.requested import samples_unconditionally
from ..generation.resume import ResumePlan
from ..generation.shares import SharedGeneration
from ..io.read_generated import open_image_set
from ..io.write_images import to_uint8
from ..metrics import Evaluator
from ..sample_options import refuse_superres_guidance
from .unfinished import ScoredSoFar, UnfinishedEvaluation

log = logging.getLogger("difflab")

READ_BATCH = 256  # images= read per batch when batch_size=auto (auto sizes generation only)


@dataclass
class SetToScore:
    """What scoring reads: the images in uint8 batches, the report's entry for them, what an evaluation stopped
    part-way had scored of them (the batches hold the others), and the block scoring runs in (on rank 0 it keeps
    what was scored when something stops it)."""

    batches: Iterator[torch.Tensor]
    source: dict[str, Any]
    so_far: ScoredSoFar
    kept: AbstractContextManager[None] = field(default_factory=contextlib.nullcontext)


def checkpoint_set(
    loaded: LoadedModel,
    options: SampleOptions,
    sampler: Sampler,
    sampler_config: dict[str, Any],
    ckpt: str,
    conditions: Conditions,
    guide: LoadedModel | None,
    processes: Processes,
    evaluator: Evaluator,
    data: ImageDataModule,
) -> SetToScore:
    """The checkpoint's samples (generated_batches), continuing what a stopped evaluation of the same settings had
    scored: rank 0 reads it and tells the others where generation starts."""
    so_far, unfinished, continued = ScoredSoFar(evaluator.accumulator()), None, None
    if processes.main:
        unfinished = UnfinishedEvaluation.of(options, sampler_config, loaded, guide, evaluator, data)
        so_far, continued = unfinished.read(evaluator, int(options.n))
    continued = from_rank_0(continued, processes)
    batches, source = generated_batches(
        loaded, options, sampler, sampler_config, ckpt, conditions, guide, processes, continued
    )
    if unfinished is None:
        return SetToScore(batches, source, so_far)
    if continued is not None:
        log.info(*unfinished.continuing_line(continued, source["batch_size"]))
        source["cpu_threads"] = continued.cpu_threads  # kept again if stopped before generation chooses anew
    batches = unfinished.kept_as_it_goes(batches, so_far, source)
    return SetToScore(batches, source, so_far, unfinished.kept_when_stopped(so_far, source))


def generated_batches(
    loaded: LoadedModel,
    options: SampleOptions,
    sampler: Sampler,
    sampler_config: dict[str, Any],
    ckpt: str,
    conditions: Conditions,
    guide: LoadedModel | None = None,
    processes: Processes = ONE_PROCESS,
    continued: ResumePlan | None = None,
) -> tuple[Iterator[torch.Tensor], dict[str, Any]]:
    """The checkpoint's samples 0..n-1 as uint8 batches, generated lazily, and the settings that made them
    (`sampler_config`: the sampler as configured, for the report); `guide`: autoguidance's weaker model. Under
    several processes each generates its share and rank 0's batches hold them all (the others' hold none).
    `continued`: a stopped evaluation had scored its first images; only the others are made, in its batches."""
    if guide is not None:
        check_guide(loaded, guide, ckpt, options.guide)
    request = sampling_request(loaded, options, sampler, conditions, guide)
    first_made = 0 if continued is None else continued.on_disk
    if continued is not None:
        request = continued.applied(request)
    generation = Generation(request, loaded.sampling_net)
    shared = SharedGeneration(generation, loaded.sample_shape, processes)

    def batches() -> Iterator[torch.Tensor]:
        with generation.cpu_threads() as threads:
            settings["cpu_threads"] = threads  # chosen when generation starts, before the report is written
            first = first_made
            for gathered in shared.batches():
                # A round of several processes is scored in the batches one process makes: the same scores.
                for images in gathered.split(shared.batch_size):
                    check_finite(images, ckpt, (first, first + len(images) - 1, n), options.guidance)
                    first += len(images)
                    yield to_uint8(images)

    n = int(options.n)
    settings = {
        "source": "checkpoint",
        "ckpt": str(ckpt),
        "global_step": loaded.global_step,
        "weights": loaded.weights,
        "n": n,
        "seed": int(options.seed),
        "sampler": sampler_config,
        "nfe": sampler.nfe,
        "precision": options.precision,
        "batch_size": shared.batch_size,
    }
    if loaded.condition is not None or guide is not None:
        settings["condition"] = loaded.condition
        settings["guidance"] = float(options.guidance)
    if guide is not None:
        settings["guide"] = str(options.guide)
    if loaded.latents is not None:  # the samples are its decodings: before, the report did not say whose
        autoencoder = loaded.latents.autoencoder
        settings["autoencoder"] = {"source": autoencoder.source, "hash": autoencoder.weights_hash}
    if conditions.inputs is not None:
        settings["inputs"] = held_out_inputs(conditions.inputs, n)
        settings["consistency"] = options.consistency is True  # projected onto down(output) = input (DDNM)
    if conditions.prompts is not None:
        settings["prompts"] = conditions.prompts
    # Before, left out: the scores changed with a negative prompt, the record did not.
    if conditions.negative_for is not None:
        settings["negative_prompt"] = options.negative_prompt
    if conditions.labels is not None:
        settings["labels"] = labels_entry(conditions, n)
        # What per_class_accuracy's class numbers name: before, folders 1/ 2/ 80/ read as "2" for folder 80.
        if (names := model_class_names(loaded.config)) is not None:
            settings["class_names"] = names
    return batches(), settings


def labels_entry(conditions: Conditions, n: int) -> str:
    """The report's words for the class of each sample: balanced over the prompts (a text model's, each naming a
    class), over every class, or spread over the labels= given."""
    spread = conditions.labels
    assert spread is not None
    count = len(spread.classes)
    if conditions.prompts:
        return f"balanced: sample i is of prompt i * {count} // {n}"
    if spread.classes == list(range(count)):
        return f"balanced: sample i is of class i * {count} // {n}"
    return f"labels={spread.classes}: sample i is of class labels[i * {count} // {n}]"


def held_out_inputs(inputs: int, n: int) -> str:
    """What n super-resolution samples were made from, for the report (and the log when inputs repeat)."""
    if n <= inputs:
        return f"the low-res versions of the first {n} held-out images, one sample each"
    low, high = n // inputs, -(-n // inputs)
    times = f"{low}" if low == high else f"{low}-{high}"
    text = (
        f"the low-res versions of the {inputs} held-out images, each super-resolved {times} times "
        f"(sample i from image i % {inputs})"
    )
    log.info("n=%d is more than the held-out split: %s", n, text)
    return text


def scored_conditions(
    loaded: LoadedModel | None,
    options: SampleOptions,
    ckpt: str | None,
    data: ImageDataModule,
    guided_by_model: bool = False,
) -> Conditions:
    """What the n scored samples are conditioned on: labels= / prompt= as sample.py takes them; else the data's
    own balanced set (every class; one prompt per class for template captions; held-out images' low-res
    versions for super-resolution)."""
    scored_as = "images= are" if loaded is None else f"{ckpt} holds {model_kind(loaded)}: its samples are"
    given = None if data is None else data.condition
    if given is not None and (loaded is None or loaded.condition is None):
        # Before, taken and ignored: the scores were those of the plain data to the digit.
        raise ValueError(
            f"data.condition={given} given, but {scored_as} scored against the data's images as they "
            "are: drop data.condition="
        )
    if loaded is None:
        return Conditions()
    if options.consistency is True and loaded.condition != "superres":
        raise ValueError(
            f"superres.consistency=true given, but {ckpt} holds {model_kind(loaded)}: only a super-resolution "
            "checkpoint's samples are projected onto their inputs; drop superres.consistency="
        )
    n = int(options.n)
    # A text model at guidance 0 samples its unconditional prediction alone: no prompt of the data's is scored.
    unconditional = samples_unconditionally(options.guidance, guided_by_model, options.negative_prompt)
    if loaded.condition == "superres" or (
        loaded.condition == "text" and options.prompt is None and not unconditional
    ):
        refuse_what_the_data_conditions_ignore(loaded, options, ckpt)
        if data.condition != loaded.condition:
            factor = f" data.sr_factor={sr_factor(loaded)}" if loaded.condition == "superres" else ""
            raise ValueError(
                f"{ckpt} is conditioned on {loaded.condition}; its reference data= must be too: add "
                f"data.condition={loaded.condition}{factor} (or drop data= to score against the data it was "
                "trained on)"
            )
        # Before, any factor was taken: the inputs were made at it, and the scores reported as the model's.
        if loaded.condition == "superres" and data.sr_factor != sr_factor(loaded):
            raise ValueError(
                f"{ckpt} super-resolves {sr_factor(loaded)}× but data.sr_factor={data.sr_factor}: its inputs would "
                f"be made at another factor than it was trained for; add data.sr_factor={sr_factor(loaded)} (or "
                "drop data=)"
            )
        return grid_conditions(data.generation_task(n), n)
    return requested_conditions(
        loaded,
        n,
        ckpt,
        options.labels,
        options.prompt,
        options.negative_prompt,
        options.guidance,
        guided_by_model=guided_by_model,
    )


def refuse_what_the_data_conditions_ignore(
    loaded: LoadedModel, options: SampleOptions, ckpt: str | None
) -> None:
    """A text model without prompt= and a super-resolution model are scored on the data's own conditions (a prompt
    per class; the held-out images' low-res versions): a setting those leave unused is one line, as sample.py
    refuses it, not a report that records it as if it had been applied."""
    superres = loaded.condition == "superres"
    what = (
        "the held-out images' low-res versions"
        if superres
        else "the data's own prompts (give prompt= to choose)"
    )
    given = {"labels": options.labels, "negative_prompt": options.negative_prompt}
    if superres:
        given["prompt"] = options.prompt
    for key, value in given.items():
        if value is not None:
            # A negative prompt steers away from it beside prompts the user chose: before, only "drop" was said.
            way = " (or give prompt= too: a negative prompt goes with prompts you choose)"
            hint = way if key == "negative_prompt" and not superres else ""
            raise ValueError(
                f"{key}={value} given, but {ckpt} holds {model_kind(loaded)}, scored on {what}: drop {key}={hint}"
            )
    if superres:
        refuse_superres_guidance(options.guidance, options.guide, f"on {model_kind(loaded)}")


def image_set(
    path: str, shape: tuple[int, int, int], batch_size: int | str | None, evaluator: Evaluator
) -> SetToScore:
    """The images in `path` (a folder or .npz; at least 2) as batches of `shape`, and their entry in the report
    (a stop starts them over: reading them back is quick)."""
    images = open_image_set(path)
    if images.count < 2:
        raise ValueError(f"{images.path} holds {images.count} image; need at least 2")
    size = READ_BATCH if batch_size in (None, "auto") else int(batch_size)
    source = {"source": "images", "images": str(images.path), "n": images.count}
    return SetToScore(images.batches(shape, size), source, ScoredSoFar(evaluator.accumulator()))
