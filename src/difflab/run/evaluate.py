"""evaluate(cfg): score a checkpoint's samples (or a folder of images) against a dataset; write a JSON.

A class-conditional checkpoint generates a set balanced over its classes (with classifier-free guidance of
scale `guidance`) and is also scored on conditioning accuracy (difflab.metrics.cond_classifier)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..autoencoder_checkpoint import is_autoencoder, load_autoencoder
from ..checkpoint import LoadedModel, load_with_guide
from ..checkpoint_config import build, image_data_config
from ..checkpoint_file import checkpoint_run_folder
from ..cluster.devices import pick_device, set_cpu_threads
from ..cluster.processes import Processes, device_of, process_group, started_processes
from ..data import ImageDataModule
from ..evaluation.autoencoder import evaluate_autoencoder
from ..evaluation.report import chosen_for_the_user, report_path
from ..evaluation.samples import checkpoint_set, image_set, scored_conditions
from ..evaluation.scoring import score_report
from ..generation import build_sampler, walked_config
from ..generation.model import sr_factor
from ..io.results import write_json
from ..metrics import Evaluator
from ..tracking.wandb_logger import log_scores_beside
from .errors import exit_if_stopped, left_to_rank_0
from .evaluate_settings import EvaluateSettings, read_evaluate_settings

log = logging.getLogger("difflab")

# A stop once images are scored says where they are kept (evaluation.unfinished); before, there is nothing to keep.
STOPPED = "nothing was written (no image had been scored yet)"


def refuse_data_without_its_folder(ckpt: str, loaded: LoadedModel) -> None:
    """An exported folder records its dataset but not the folder it lay in (a path of the training machine): one
    line with every data= setting that scores it, before, a chain of refusals, each naming one more key."""
    stored = loaded.config.get("data") or {}
    if "root" in stored or stored.get("dataset") in (None, "digits"):  # digits: bundled with scikit-learn
        return
    c, size = loaded.sample_shape[0], loaded.sample_shape[1]
    condition = stored.get("condition")
    extra = f" data.condition={condition}" if condition in ("labels", "superres") else ""
    if condition == "superres":
        extra += f" data.sr_factor={stored.get('sr_factor')}"
    raise ValueError(
        f"{ckpt} records its dataset ({stored['dataset']}) but not the folder it lies in (an exported folder keeps "
        f"no paths of the training machine): add data={stored['dataset']} data.root=<its folder> "
        f"data.image_size={size} data.channels={c}{extra}"
    )


def reference_data(settings: EvaluateSettings, loaded: LoadedModel | None) -> ImageDataModule:
    """data=… when given, else the dataset the checkpoint was trained on; its size must match the samples."""
    if settings.data is not None:
        recorded = (loaded.config.get("data") or {}).get("class_folders") if loaded is not None else None
        given = settings.data.get("class_folders") if isinstance(settings.data, Mapping) else None
        # A labelled folder model's classes, so that data= on other class folders is refused (its labels, which
        # conditioning accuracy scores by, would mean other classes), as the data it was trained on is.
        data = instantiate(
            settings.data, **({"class_folders": list(recorded)} if recorded and not given else {})
        )
    elif loaded is not None:
        # A diffusers folder keeps only the image shape, no dataset.
        if "_target_" not in (loaded.config.get("data") or {}):
            raise ValueError(
                f"{settings.sampling.ckpt} records no dataset (a diffusers folder): add data=<the dataset to score "
                "against> (e.g. data=cifar10)"
            )
        refuse_data_without_its_folder(settings.sampling.ckpt, loaded)
        data = build(image_data_config(loaded.config), "data", settings.sampling.allowed_targets)
    else:
        raise ValueError("images=… needs the dataset to compare against: add data=<name> (e.g. data=mnist)")
    if loaded is not None and (data.channels, data.image_size) != loaded.sample_shape[:2]:
        c, size = loaded.sample_shape[0], loaded.sample_shape[1]
        # Every setting the data needs at once: before, a super-resolution model's data.condition and factor came
        # one refusal later.
        extra = ""
        if loaded.condition == "superres":
            condition = "" if data.condition == "superres" else " data.condition=superres"
            extra = f"{condition} data.sr_factor={sr_factor(loaded)}"
        raise ValueError(
            f"the checkpoint makes {c}-channel {size}px images but data= gives {data.channels}-channel "
            f"{data.image_size}px references; add data.channels={c} data.image_size={size}{extra}"
        )
    return data


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score cfg.ckpt's samples (or the images in cfg.images) with cfg.metrics; write and return the report.
    Started by torchrun as several processes, they share the sampling and rank 0 scores and writes (the others
    return {}). SIGTERM or Ctrl-C ends it with one line (exit 143 or 130)."""
    return evaluate_from(read_evaluate_settings(cfg))


def evaluate_from(settings: EvaluateSettings) -> dict[str, Any]:
    """evaluate() once its settings are read (evaluate.py reads them before torch loads)."""
    processes = started_processes()
    with exit_if_stopped(
        "evaluate.py", STOPPED if processes.main else left_to_rank_0(processes.rank, "scores")
    ):
        return evaluate_with(settings, processes)


def evaluate_with(settings: EvaluateSettings, processes: Processes) -> dict[str, Any]:
    """evaluate() once its settings are read."""
    sampling = settings.sampling
    if processes.world > 1 and (not sampling.ckpt or is_autoencoder(sampling.ckpt)):
        what = "images=" if not sampling.ckpt else "an autoencoder's reconstructions"
        raise ValueError(f"{what} are scored by one process: run evaluate.py without torchrun or srun")
    if sampling.ckpt and is_autoencoder(sampling.ckpt):  # no samples: its reconstructions are scored
        unread = " ".join(settings.unread_by_autoencoders)
        if unread:  # before, taken and ignored: the scores were the same to the digit
            raise ValueError(
                f"{unread} given, but {sampling.ckpt} is an autoencoder: evaluate.py scores its reconstructions "
                "of n held-out images and generates nothing; drop them"
            )
        return evaluate_autoencoder_run(settings)
    set_cpu_threads(sampling.options.cpu_threads)
    evaluator = Evaluator(**settings.metrics)
    if evaluator.cpu_threads is None:
        # The feature network keeps the threads the process starts with, whatever generation is given.
        evaluator.cpu_threads = torch.get_num_threads()
    path = report_path(sampling.out, sampling.ckpt, sampling.root_dir)
    device = pick_device(device_of(sampling.device, processes))
    evaluator.feature_extractor(device)  # fails early on missing Inception weights
    with process_group(processes, device):
        return scored(settings, evaluator, path, device, processes)


def scored(
    settings: EvaluateSettings, evaluator: Evaluator, path: Any, device: torch.device, processes: Processes
) -> dict[str, Any]:
    """Generate (or read) the images, score them on rank 0, write the report and log the scores."""
    sampling = settings.sampling
    loaded, guide = None, None
    if sampling.ckpt:
        loaded, guide = load_with_guide(
            sampling.ckpt,
            sampling.options.guide,
            device,
            sampling.allowed_targets,
            autoencoder=sampling.autoencoder,
        )
    data = reference_data(settings, loaded)
    conditions = scored_conditions(loaded, sampling.options, sampling.ckpt, data, guide is not None)
    if loaded is not None:
        sampler = build_sampler(sampling.sampler, loaded)
        config = walked_config(sampling.sampler, sampler)
        scoring = checkpoint_set(
            loaded,
            sampling.options,
            sampler,
            config,
            sampling.ckpt,
            conditions,
            guide,
            processes,
            evaluator,
            data,
        )
    else:
        shape = (data.channels, data.image_size, data.image_size)
        scoring = image_set(settings.images, shape, sampling.options.batch_size, evaluator)
    if not processes.main:
        for _ in scoring.batches:  # this rank's share, sent to rank 0
            pass
        return {}
    with scoring.kept:
        report = score_report(evaluator, scoring, data, conditions, device)
        path = write_json(report, path, or_next_free=chosen_for_the_user(sampling.out, path))
    scores = report["metrics"]
    log.info("%s -> %s", json.dumps(scores), path)
    if loaded is not None and settings.log_wandb:
        log_beside_run(sampling.ckpt, scores, int(scoring.source["n"]), loaded.global_step, loaded.config)
    return report


def evaluate_autoencoder_run(settings: EvaluateSettings) -> dict[str, Any]:
    """Score an autoencoder's reconstructions of its held-out split (or data=, metrics.reference_split=, when
    given); write the report and, as for a diffusion checkpoint, log the scores into its run's W&B run."""
    sampling = settings.sampling
    path = report_path(sampling.out, sampling.ckpt, sampling.root_dir)
    device = pick_device(sampling.device)
    loaded = load_autoencoder(sampling.ckpt, device, sampling.allowed_targets)
    options = sampling.options
    # data= is reconstructed instead of the data it was trained on (None: that data).
    data = None if settings.data is None else instantiate(settings.data)
    report = evaluate_autoencoder(
        loaded,
        sampling.ckpt,
        options.n,
        options.batch_size,
        device,
        settings.metrics,
        path,
        sampling.allowed_targets,
        or_next_free=chosen_for_the_user(sampling.out, path),
        data=data,
    )
    if settings.log_wandb:
        n = report["reconstructed"]["n"]
        log_beside_run(sampling.ckpt, report["metrics"], n, loaded.global_step, loaded.config)
    return report


def log_beside_run(ckpt: str, scores: dict[str, Any], n: int, step: int, config: dict[str, Any]) -> None:
    """The scores of a run's checkpoint (and their n) also go to that run's W&B run as eval/*."""
    # ckpt= may be the run folder itself or its checkpoints/<file>: the same run either way.
    log_scores_beside(checkpoint_run_folder(ckpt), {**scores, "n": n}, step, config)
