"""evaluate(cfg): score a checkpoint's samples (or a folder of images) against a dataset; write a JSON.

A class-conditional checkpoint generates a set balanced over its classes (with classifier-free guidance of
scale `guidance`) and is also scored on conditioning accuracy (difflab.metrics.cond_classifier)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..checkpoint import LoadedModel, build, load_model
from ..data import ImageDataModule
from ..data.scoring import conditioning_classifier_for, reference_statistics
from ..diffusion import Sampler
from ..generation import (
    Conditions,
    Generation,
    SampleOptions,
    grid_conditions,
    requested_conditions,
    sampling_request,
)
from ..io.image_sets import open_image_set
from ..io.images import to_uint8
from ..io.results import check_writable_file, first_free, write_json
from ..metrics import Evaluator
from ..metrics.cond_classifier import LinearClassifier, per_class_accuracy
from ..metrics.sample_size import small_sample_warning
from ..metrics.statistics import Stats
from ..progress import Progress
from .common import check_finite, pick_device, set_cpu_threads
from .rules import whole
from .sampling_settings import SAMPLING_RULES, SamplingSettings, read_sampling_settings
from .wandb_glue import log_scores_to_run

log = logging.getLogger("difflab")


RULES = {**SAMPLING_RULES, "n": whole(2)}  # a covariance needs two samples
READ_BATCH = 256  # images= read per batch when batch_size=auto (auto sizes generation only)


@dataclass(frozen=True)
class EvaluateSettings:
    """evaluate.py's config, read and checked once: what to generate (or the images= to score), the reference
    data= (None: the checkpoint's own), the metric settings, and whether the scores also go to the run's W&B."""

    sampling: SamplingSettings
    images: str | None
    data: DictConfig | None
    metrics: dict[str, Any]
    log_wandb: bool


def read_settings(cfg: DictConfig) -> EvaluateSettings:
    """evaluate.py's config, every value and combination checked before anything is loaded or written."""
    if bool(cfg.ckpt) == bool(cfg.images):
        raise ValueError(
            "give exactly one of ckpt=<checkpoint> (generate and score) or images=<folder or .npz>"
        )
    sampling = read_sampling_settings(
        cfg, RULES, "sample"
    )  # evaluate.py scores samples: it has no edit modes
    if not cfg.ckpt and float(cfg.guidance) != 1.0:
        raise ValueError(f"guidance={cfg.guidance} needs ckpt=<a conditional checkpoint>, not images=")
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True)
    return EvaluateSettings(sampling, cfg.images, cfg.get("data"), metrics, bool(cfg.log_wandb))


def report_path(settings: SamplingSettings) -> Path:
    """Where the JSON goes: out=; else the checkpoint's run folder (<run>/metrics.json, or metrics_2.json, …
    beside earlier reports); else outputs/evaluate/<date>_<time>.json. Checked before any work: an existing
    out= is never overwritten, a folder that cannot be written is refused."""
    if settings.out:
        path = Path(settings.out)
    else:
        ckpt = Path(settings.ckpt) if settings.ckpt else None
        if ckpt is not None and ckpt.parent.name == "checkpoints":
            path = ckpt.parent.parent / "metrics.json"
        else:
            path = (
                Path(settings.root_dir)
                / "outputs"
                / "evaluate"
                / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}.json"
            )
        path = first_free(path)
    check_writable_file(path)
    return path


def reference_data(settings: EvaluateSettings, loaded: LoadedModel | None) -> ImageDataModule:
    """data=… when given, else the dataset the checkpoint was trained on; its size must match the samples."""
    if settings.data is not None:
        data = instantiate(settings.data)
    elif loaded is not None:
        data = build(loaded.config, "data", settings.sampling.allowed_targets)
    else:
        raise ValueError("images=… needs the dataset to compare against: add data=<name> (e.g. data=mnist)")
    if loaded is not None and (data.channels, data.image_size) != loaded.sample_shape[:2]:
        c, size = loaded.sample_shape[0], loaded.sample_shape[1]
        raise ValueError(
            f"the checkpoint makes {c}-channel {size}px images but data= gives {data.channels}-channel "
            f"{data.image_size}px references; add data.channels={c} data.image_size={size}"
        )
    return data


def generated_batches(
    loaded: LoadedModel,
    options: SampleOptions,
    sampler: Sampler,
    sampler_config: dict[str, Any],
    ckpt: str,
    conditions: Conditions,
) -> tuple[Iterator[torch.Tensor], dict[str, Any]]:
    """The checkpoint's samples 0..n-1 as uint8 batches, generated lazily, and the settings that made them
    (`sampler_config`: the sampler as configured, for the report)."""
    generation = Generation(sampling_request(loaded, options, sampler, conditions), loaded.net)

    def batches() -> Iterator[torch.Tensor]:
        with generation.cpu_threads() as threads:
            settings["cpu_threads"] = threads  # chosen when generation starts, before the report is written
            for _, images in generation.batches():
                check_finite(images, ckpt)
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
        "batch_size": generation.batch_size,
    }
    if loaded.condition is not None:
        settings["condition"] = loaded.condition
        settings["guidance"] = float(options.guidance)
    if conditions.prompts is not None:
        settings["prompts"] = conditions.prompts
    if conditions.labels is not None:
        # A text model's samples are balanced over its prompts, each naming a class; a label model's over classes.
        what, count = (
            ("prompt", len(conditions.prompts)) if conditions.prompts else ("class", loaded.num_classes)
        )
        settings["labels"] = f"balanced: sample i is of {what} i * {count} // {n}"
    return batches(), settings


def scored_conditions(
    loaded: LoadedModel | None, options: SampleOptions, ckpt: str | None, data: ImageDataModule
) -> Conditions:
    """What the n scored samples are conditioned on: labels= / prompt= as sample.py takes them; else the data's
    own balanced set (every class; one prompt per class for template captions; held-out images' low-res
    versions for super-resolution)."""
    if loaded is None:
        return Conditions()
    n = int(options.n)
    if loaded.condition in ("text", "superres") and options.prompt is None:
        if data.condition != loaded.condition:
            raise ValueError(
                f"{ckpt} is conditioned on {loaded.condition}; its reference data= must be too (drop data=)"
            )
        return grid_conditions(data.generation_task(n), n)
    return requested_conditions(
        loaded, n, ckpt, options.labels, options.prompt, options.negative_prompt, options.guidance
    )


def conditioning_classifier(
    evaluator: Evaluator, data: ImageDataModule, conditions: Conditions, device: torch.device
) -> LinearClassifier | None:
    """The classifier of the conditioning accuracy when samples have requested classes and the reference data
    has those labels (else None, with a warning)."""
    if conditions.labels is None:
        if conditions.prompts is not None:
            log.info(
                "no conditioning accuracy: the prompts name no classes (e.g. a folder without class subfolders)"
            )
        return None
    if not data.num_classes or max(conditions.labels) >= data.num_classes:
        log.warning(
            "no conditioning accuracy: data=%s has no labels for classes 0..%d",
            data.dataset,
            max(conditions.labels),
        )
        return None
    classifier, hit = conditioning_classifier_for(evaluator, data, device)
    log.info(
        "conditioning classifier: %d training images, %.3f accuracy on %d held-out (%s)",
        classifier.num_train,
        classifier.heldout_accuracy,
        classifier.num_heldout,
        "cached" if hit else "fitted and cached",
    )
    return classifier


def conditioning_report(
    classifier: LinearClassifier, predicted: list[torch.Tensor], wanted: list[int]
) -> dict[str, Any]:
    """Conditioning accuracy overall and per requested class, beside the classifier's own accuracy."""
    found = torch.cat(predicted).numpy()
    return {
        "cond_accuracy": float((found == torch.as_tensor(wanted).numpy()).mean()),
        "per_class_accuracy": per_class_accuracy(found, wanted),
        "classifier": {
            "heldout_accuracy": classifier.heldout_accuracy,
            "train_images": classifier.num_train,
            "heldout_images": classifier.num_heldout,
        },
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score cfg.ckpt's samples (or the images in cfg.images) with cfg.metrics; write and return the report."""
    settings = read_settings(cfg)
    sampling = settings.sampling
    set_cpu_threads(sampling.options.cpu_threads)
    evaluator = Evaluator(**settings.metrics)
    if evaluator.cpu_threads is None:
        # The feature network keeps the threads the process starts with, whatever generation is given.
        evaluator.cpu_threads = torch.get_num_threads()
    path = report_path(sampling)
    device = pick_device(sampling.device)
    evaluator.feature_extractor(device)  # fails early on missing Inception weights

    loaded = load_model(sampling.ckpt, device) if sampling.ckpt else None
    data = reference_data(settings, loaded)
    conditions = scored_conditions(loaded, sampling.options, sampling.ckpt, data)
    shape = (data.channels, data.image_size, data.image_size)
    if loaded is not None:
        sampler = sampling.build_sampler(loaded)
        batches, source = generated_batches(
            loaded, sampling.options, sampler, sampling.sampler, sampling.ckpt, conditions
        )
    else:
        images = open_image_set(settings.images)
        if images.count < 2:
            raise ValueError(f"{images.path} holds {images.count} image; need at least 2")
        batch_size = sampling.options.batch_size
        batches = images.batches(shape, READ_BATCH if batch_size in (None, "auto") else int(batch_size))
        source = {"source": "images", "images": str(images.path), "n": images.count}

    start = time.perf_counter()
    reference, hit = reference_statistics(evaluator, data, device)
    log.info("reference statistics: %d images (%s)", reference.n, "cached" if hit else "computed and cached")
    warn_if_too_few(evaluator, int(source["n"]), reference.n)
    classifier = conditioning_classifier(evaluator, data, conditions, device)
    what = "generating and embedding" if loaded is not None else "embedding"
    scores, conditioning = scored(
        evaluator, batches, int(source["n"]), reference, classifier, conditions, device, what
    )

    report = {
        "metrics": scores,
        "generated": source,
        "reference": {
            "dataset": data.dataset,
            "root": None if data.root is None else str(data.root),
            "split": evaluator.reference_split,
            "num_images": reference.n,
            "image_size": data.image_size,
            "channels": data.channels,
            "cache_hit": hit,
        },
        **({"conditioning": conditioning} if conditioning is not None else {}),
        "metric_settings": evaluator.settings(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(report, path)
    log.info("%s -> %s", json.dumps(scores), path)
    if loaded is not None and settings.log_wandb:
        log_to_wandb_run(Path(sampling.ckpt), {**scores, "n": int(source["n"])}, loaded)
    return report


def scored(
    evaluator: Evaluator,
    batches: Iterable[torch.Tensor],
    n: int,
    reference: Stats,
    classifier: LinearClassifier | None,
    conditions: Conditions,
    device: torch.device,
    what: str,
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """The metrics of the n images in `batches` against `reference`, and with a classifier the conditioning
    accuracy of the requested labels (its report, else None)."""
    acc, logits, predicted = evaluator.accumulator(), [], []
    with Progress(what, n, "images") as progress:
        for batch in batches:
            features, batch_logits = evaluator.embed(batch, device)
            acc.update(features)
            if batch_logits is not None:
                logits.append(batch_logits)
            if classifier is not None:
                predicted.append(torch.as_tensor(classifier.predict(features)))
            progress.advance(len(batch))
    scores = evaluator.scores(acc.result(), reference, torch.cat(logits) if logits else None)
    if classifier is None:
        return scores, None
    conditioning = conditioning_report(classifier, predicted, conditions.labels)
    scores["cond_accuracy"] = conditioning["cond_accuracy"]
    scores["classifier_accuracy"] = classifier.heldout_accuracy
    return scores, conditioning


def warn_if_too_few(evaluator: Evaluator, n: int, reference: int) -> None:
    """One warning when n samples or the reference set are too few for the metrics asked (sizes that give stable
    numbers included), before the work starts."""
    prc = evaluator.keep_features > 0 and evaluator.prc
    warning = small_sample_warning(n, reference, evaluator.fd_key, evaluator.feature_dim, prc)
    if warning and evaluator.reference_split == "val":
        warning += " (metrics.reference_split=train scores against the training split, usually larger)"
    if warning:
        log.warning(warning)


def log_to_wandb_run(ckpt: Path, scores: dict[str, float], loaded: LoadedModel) -> None:
    """A checkpoint of a run folder (<run>/checkpoints/…) whose run logged to W&B: its scores go into that W&B run
    too. The report is written already, so a W&B failure is a warning, not an error."""
    if ckpt.parent.name != "checkpoints":
        return
    try:
        run_id = log_scores_to_run(ckpt.parent.parent, scores, loaded.global_step, loaded.config)
    except Exception as error:  # noqa: BLE001 (W&B raises many kinds; none may cost the written report)
        log.warning("the scores were not logged to W&B: %s", error)
        return
    if run_id:
        log.info("logged the scores to W&B run %s as eval/*", run_id)
