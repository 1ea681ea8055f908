"""evaluate(cfg): score a checkpoint's samples (or a folder of images) against a dataset; write a JSON.

A class-conditional checkpoint generates a set balanced over its classes (with classifier-free guidance of
scale `guidance`) and is also scored on conditioning accuracy (difflab.metrics.cond_classifier)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..checkpoint import LoadedModel, build, load_model
from ..data import ImageDataModule
from ..data.scoring import conditioning_classifier_for, reference_statistics
from ..generation import Conditions, Generation, grid_conditions, requested_conditions, sampling_request
from ..io.image_sets import open_image_set
from ..io.images import to_uint8
from ..metrics import Evaluator
from ..metrics.cond_classifier import LinearClassifier, per_class_accuracy
from ..metrics.sample_size import small_sample_warning
from ..progress import Progress
from .common import (
    build_sampler,
    check_finite,
    check_writable_file,
    first_free,
    pick_device,
    sample_options,
    set_cpu_threads,
    write_json,
)
from .rules import check_values, whole
from .sample import RULES as SAMPLE_RULES
from .wandb_glue import log_scores_to_run

log = logging.getLogger("difflab")


RULES = {**SAMPLE_RULES, "n": whole(2)}  # a covariance needs two samples
READ_BATCH = 256  # images= read per batch when batch_size=auto (auto sizes generation only)


def report_path(cfg: DictConfig) -> Path:
    """Where the JSON goes: out=; else the checkpoint's run folder (<run>/metrics.json, or metrics_2.json, …
    beside earlier reports); else outputs/evaluate/<date>_<time>.json. Checked before any work: an existing
    out= is never overwritten, a folder that cannot be written is refused."""
    if cfg.get("out"):
        path = Path(cfg.out)
    else:
        ckpt = Path(cfg.ckpt) if cfg.get("ckpt") else None
        if ckpt is not None and ckpt.parent.name == "checkpoints":
            path = ckpt.parent.parent / "metrics.json"
        else:
            path = (
                Path(cfg.paths.root_dir)
                / "outputs"
                / "evaluate"
                / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}.json"
            )
        path = first_free(path)
    check_writable_file(path)
    return path


def reference_data(cfg: DictConfig, loaded: LoadedModel | None) -> ImageDataModule:
    """data=… when given, else the dataset the checkpoint was trained on; its size must match the samples."""
    if cfg.get("data") is not None:
        data = instantiate(cfg.data)
    elif loaded is not None:
        data = build(loaded.config, "data", cfg.get("allowed_targets") or ())
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
    cfg: DictConfig, loaded: LoadedModel, conditions: Conditions
) -> tuple[Iterator[torch.Tensor], dict[str, Any]]:
    """The checkpoint's samples 0..n-1 as uint8 batches, generated lazily, and the settings that made them."""
    sampler = build_sampler(cfg, loaded)
    options = sample_options(cfg)
    generation = Generation(sampling_request(loaded, options, sampler, conditions), loaded.sampling_net)

    def batches() -> Iterator[torch.Tensor]:
        with generation.cpu_threads() as threads:
            settings["cpu_threads"] = threads  # chosen when generation starts, before the report is written
            for _, images in generation.batches():
                check_finite(images, cfg.ckpt)
                yield to_uint8(images)

    n = int(options.n)
    settings = {
        "source": "checkpoint",
        "ckpt": str(cfg.ckpt),
        "global_step": loaded.global_step,
        "weights": loaded.weights,
        "n": n,
        "seed": int(options.seed),
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
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


def scored_conditions(cfg: DictConfig, loaded: LoadedModel | None, data: ImageDataModule) -> Conditions:
    """What the n scored samples are conditioned on: labels= / prompt= as sample.py takes them; else the data's
    own balanced set (every class; one prompt per class for template captions; held-out images' low-res
    versions for super-resolution)."""
    if loaded is None:
        return Conditions()
    n = int(cfg.n)
    if loaded.condition in ("text", "superres") and cfg.get("prompt") is None:
        if data.condition != loaded.condition:
            raise ValueError(
                f"{cfg.ckpt} is conditioned on {loaded.condition}; its reference data= must be too (drop data=)"
            )
        return grid_conditions(data.generation_task(n), n)
    options = sample_options(cfg)
    return requested_conditions(
        loaded, n, cfg.ckpt, options.labels, options.prompt, options.negative_prompt, options.guidance
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
    if bool(cfg.get("ckpt")) == bool(cfg.get("images")):
        raise ValueError(
            "give exactly one of ckpt=<checkpoint> (generate and score) or images=<folder or .npz>"
        )
    check_values(cfg, RULES)
    set_cpu_threads(cfg)
    evaluator = Evaluator(**OmegaConf.to_container(cfg.metrics, resolve=True))
    if evaluator.cpu_threads is None:
        # The feature network keeps the threads the process starts with, whatever generation is given.
        evaluator.cpu_threads = torch.get_num_threads()
    path = report_path(cfg)
    device = pick_device(cfg.device)
    evaluator.feature_extractor(device)  # fails early on missing Inception weights

    loaded = load_model(cfg.ckpt, device) if cfg.get("ckpt") else None
    if loaded is None and float(cfg.guidance) != 1.0:
        raise ValueError(f"guidance={cfg.guidance} needs ckpt=<a conditional checkpoint>, not images=")
    data = reference_data(cfg, loaded)
    conditions = scored_conditions(cfg, loaded, data)
    shape = (data.channels, data.image_size, data.image_size)
    if loaded is not None:
        batches, source = generated_batches(cfg, loaded, conditions)
    else:
        images = open_image_set(cfg.images)
        if images.count < 2:
            raise ValueError(f"{images.path} holds {images.count} image; need at least 2")
        batches = images.batches(
            shape, READ_BATCH if cfg.batch_size in (None, "auto") else int(cfg.batch_size)
        )
        source = {"source": "images", "images": str(images.path), "n": images.count}

    start = time.perf_counter()
    reference, hit = reference_statistics(evaluator, data, device)
    log.info("reference statistics: %d images (%s)", reference.n, "cached" if hit else "computed and cached")
    warn_if_too_few(evaluator, int(source["n"]), reference.n)
    classifier = conditioning_classifier(evaluator, data, conditions, device)
    acc, logits, predicted = evaluator.accumulator(), [], []
    what = "generating and embedding" if loaded is not None else "embedding"
    with Progress(what, int(source["n"]), "images") as progress:
        for batch in batches:
            features, batch_logits = evaluator.embed(batch, device)
            acc.update(features)
            if batch_logits is not None:
                logits.append(batch_logits)
            if classifier is not None:
                predicted.append(torch.as_tensor(classifier.predict(features)))
            progress.advance(len(batch))
    scores = evaluator.scores(acc.result(), reference, torch.cat(logits) if logits else None)
    conditioning = None
    if classifier is not None:
        conditioning = conditioning_report(classifier, predicted, conditions.labels)
        scores["cond_accuracy"] = conditioning["cond_accuracy"]
        scores["classifier_accuracy"] = classifier.heldout_accuracy

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
    if loaded is not None and cfg.get("log_wandb", True):
        log_to_wandb_run(Path(cfg.ckpt), {**scores, "n": int(source["n"])}, loaded)
    return report


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
