"""FID (or fd_effl0), KID and precision/recall of the EMA model during training, split across DDP ranks."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..data.scoring import conditioning_classifier_for, reference_statistics
from ..generation import Task
from ..generation.finite import guidance_too_large
from ..io.atomic import atomic_file
from ..io.write_images import to_uint8
from ..metrics.cond_classifier import LinearClassifier
from ..metrics.evaluator import Evaluator
from ..metrics.statistics import Stats, StatsAccumulator
from ..training.finite import HINT, NonFiniteError, check_losses_so_far
from .giving_way import GaveWay, Owed, gave_way, stoppable
from .progress_bar import busy
from .rank_merge import merge_statistics, sum_over_ranks
from .rank_share import GeneratingCallback, SamplerFactory
from .sharding import gather_in_index_order

log = logging.getLogger("difflab")


class FIDCallback(GeneratingCallback):
    """Every `every_n_steps` optimizer steps (and/or `every_n_epochs` epochs, and/or at the end of
    training): generate `num_samples` images with the EMA weights and the configured sampler, score them
    against the cached statistics of the datamodule's reference split, and log `val/<fd_key>`,
    `val/kid`, `val/kid_std`, `val/precision`, `val/recall` (and `val/isc` or `val/is_effl0` with
    metrics.inception_score=true).

    Under DDP rank r generates and embeds samples r, r + W, r + 2W, … < K (sample i always starts from the
    noise of (seed, i), so no two ranks draw the same sample), batch by batch into running statistics; the
    ranks' means and covariances are all-reduced (memory and traffic do not grow with K), rank 0 scores
    them, and the scores are broadcast so that every rank's `trainer.callback_metrics` holds them: a
    ModelCheckpoint can `monitor` them to keep the best model.

    A class-conditional model generates a balanced set over its classes (sample i of class i·C // K) with
    classifier-free guidance of scale `guidance`, and also logs `val/cond_accuracy`: the share of samples
    that a classifier fitted on the real training images assigns to the requested class (see
    difflab.metrics.cond_classifier; fitted once and cached like the reference statistics).
    """

    def __init__(
        self,
        sampler: SamplerFactory,
        metrics: Evaluator | Mapping[str, Any],
        num_samples: int = 10_000,
        every_n_steps: int = 0,
        every_n_epochs: int = 0,
        at_train_end: bool = False,
        batch_size: int | str = 256,
        seed: int = 12_345,
        save_samples_to: str | None = None,
        guidance: float = 1.0,
        best_checkpoint: str | None = None,
        precision: str = "fp32",
        guide: str | None = None,
    ) -> None:
        if num_samples < 2:
            raise ValueError(f"the FID callback needs num_samples >= 2, got {num_samples}")
        super().__init__(sampler, num_samples, seed, batch_size, guidance, precision, guide)
        # The seed is apart from the sample grid's, so the grid is not the first 64 samples.
        self.evaluator = metrics if isinstance(metrics, Evaluator) else Evaluator(**dict(metrics))
        self.every_n_steps = int(every_n_steps)
        self.every_n_epochs = int(every_n_epochs)
        self.at_train_end = at_train_end
        self.save_samples_to = None if save_samples_to is None else Path(save_samples_to)
        self.best_checkpoint = None if best_checkpoint is None else Path(best_checkpoint)
        self._best_score = math.inf  # the lowest Fréchet distance seen, kept in checkpoints for a resume
        self._last_step = -1
        self._reference_stats: Stats | None = None
        self._classifier: LinearClassifier | None = None
        self._task: tuple[object, Task] | None = None  # (datamodule, its task): the same at every evaluation
        self._owed = Owed()
        # The epoch of the last step trained, which the scores' row carries: at the end of training Lightning's
        # current_epoch is already the next one when the last epoch ran to its end.
        self._epoch_trained: int | None = None

    @property
    def monitor(self) -> str:
        """The logged key of the Fréchet distance, e.g. 'val/fd_effl0' (what a ModelCheckpoint monitors)."""
        return f"val/{self.evaluator.fd_key}"

    @property
    def scores_anything(self) -> bool:
        """False when every trigger is off: then the callback costs nothing, not even reference statistics."""
        return self.every_n_steps > 0 or self.every_n_epochs > 0 or bool(self.at_train_end)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self._best_score, **self._owed.state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._best_score = float(state_dict.get("best_score", math.inf))
        self._owed.load(state_dict)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Load the feature network and the reference statistics now, so that a missing weights file or
        dataset split fails before training rather than at the first evaluation hours later."""
        if not self.scores_anything:
            return
        self.evaluator.feature_extractor(pl_module.device)
        if trainer.is_global_zero:
            self._reference(trainer)
            self._conditioning_classifier(trainer, pl_module)
        trainer.strategy.barrier("fid_reference")
        self._conditioning_classifier(trainer, pl_module)  # the other ranks read what rank 0 cached

    def _conditioning_classifier(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        task = self._task_of(trainer)
        labelled = task.condition == "labels" or task.prompt_classes is not None
        # One class: every sample is of it, and no classifier can be fitted (there is no other to tell it from).
        if self._classifier is None and labelled and (trainer.datamodule.num_classes or 0) >= 2:
            self._classifier, _ = conditioning_classifier_for(
                self.evaluator, trainer.datamodule, pl_module.device
            )

    def _task_of(self, trainer: L.Trainer) -> Task:
        """The datamodule's task for num_samples samples, read once (its held-out images too)."""
        data = trainer.datamodule
        if self._task is None or self._task[0] is not data:
            self._task = (data, data.generation_task(self.num_samples))
        return self._task[1]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if self._owed.due(trainer):
            if trainer.is_global_zero:
                log.info(
                    "FID evaluation at step %d, given up for a stop signal, made now", trainer.global_step
                )
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self._epoch_trained = trainer.current_epoch
        step = trainer.global_step
        # step > 0: with gradient accumulation the first micro-batches end before the first optimizer step.
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if (
            self.every_n_epochs > 0
            and epoch % self.every_n_epochs == 0
            and trainer.global_step != self._last_step
        ):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_train_end and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Generate and embed this rank's share, merge the statistics, score on rank 0, broadcast; log. Nothing
        ({}) when a stop signal made it give way (callbacks.giving_way: the step is saved instead)."""
        self._last_step = trainer.global_step
        check_losses_so_far(pl_module)  # a diverged loss is named as such, not scored
        try:
            acc, logits, images, hits = self._embed_my_share(trainer, pl_module, self.evaluator.keep_features)
        except GaveWay:
            acc = None
        if gave_way(trainer, acc is None, "FID evaluation", self._owed):
            return {}
        # Every rank learns of any rank's: all raise together (before, NaN samples were scored as black images).
        not_finite = int(sum_over_ranks(trainer, self._not_finite))
        if not_finite:
            cause = guidance_too_large(self._guidance) or f"the EMA network has diverged; {HINT}"
            raise NonFiniteError(
                f"FID evaluation at step {trainer.global_step}: {not_finite} of {self.num_samples} samples are not "
                f"finite: {cause}"
            )
        stats = merge_statistics(trainer, acc, self.evaluator.keep_features)
        if logits is not None:
            logits = gather_in_index_order(trainer, logits.to(trainer.strategy.root_device)).cpu()
        if images is not None:
            gathered = gather_in_index_order(trainer, images.to(trainer.strategy.root_device))
            self._save_samples(trainer, gathered, stats.n)
        scores = self._score(trainer, stats, logits) if trainer.is_global_zero else None
        scores = trainer.strategy.broadcast(scores, src=0)
        if hits is not None:  # requested class found, summed over the ranks' shares
            scores["cond_accuracy"] = float(sum_over_ranks(trainer, hits)) / self.num_samples
        logged = {f"val/{k}": v for k, v in scores.items()}
        for key, value in logged.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        epoch = trainer.current_epoch if self._epoch_trained is None else self._epoch_trained
        for logger in trainer.loggers:
            # With the epoch, as Lightning's own rows (and the validation's) carry it.
            logger.log_metrics({**logged, "epoch": epoch}, step=trainer.global_step)
        self._keep_if_best(trainer, logged[self.monitor])
        return logged

    def _keep_if_best(self, trainer: L.Trainer, score: float) -> None:
        """Write best_checkpoint when this is the lowest Fréchet distance so far (every rank takes part)."""
        if self.best_checkpoint is None or not score < self._best_score:
            return
        self._best_score = score
        trainer.save_checkpoint(self.best_checkpoint, weights_only=False)

    def _embed_my_share(
        self, trainer: L.Trainer, pl_module: L.LightningModule, keep: int
    ) -> tuple[StatsAccumulator, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Samples rank, rank + W, … < K, generated and embedded batch by batch (memory does not grow with K):
        their running statistics, their logits (with the Inception Score), the samples (when saved) and,
        for a class-conditional model, how many the classifier assigns to their requested class."""
        acc = StatsAccumulator(self.evaluator.feature_dim, self.evaluator.extractor, keep)
        logits, kept_images = [], []
        hits = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        self._not_finite = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        with self.my_share(trainer, pl_module, self._task_of(trainer)) as generation:
            self._guidance = generation.request.guidance
            wanted = generation.request.conditions.labels
            scores_classes = self._classifier is not None and wanted is not None
            with busy(trainer, f"scoring {self.num_samples} samples", generation.steps) as on_step:
                for indices, images in generation.batches(stoppable(trainer, on_step)):
                    self._not_finite += (~torch.isfinite(images.flatten(1))).any(1).sum()
                    images = to_uint8(images)
                    features, batch_logits = self.evaluator.embed(images, pl_module.device)
                    acc.update(features, torch.as_tensor(indices))
                    if scores_classes:
                        requested = np.asarray([wanted[i] for i in indices])
                        hits += float((self._classifier.predict(features) == requested).sum())
                    if batch_logits is not None:
                        logits.append(batch_logits.float())
                    if self.save_samples_to is not None:
                        kept_images.append(images)
        return (
            acc,
            torch.cat(logits) if logits else None,
            torch.cat(kept_images) if kept_images else None,
            hits if scores_classes else None,
        )

    def _score(self, trainer: L.Trainer, stats: Stats, logits: torch.Tensor | None) -> dict[str, float]:
        """Scores of the merged statistics against the reference statistics."""
        return self.evaluator.scores(stats, self._reference(trainer), logits)

    def _reference(self, trainer: L.Trainer) -> Stats:
        """The reference split's statistics: read from the on-disk cache (or computed into it) once per run."""
        if self._reference_stats is None:
            device = trainer.strategy.root_device
            self._reference_stats, _ = reference_statistics(self.evaluator, trainer.datamodule, device)
        return self._reference_stats

    def _save_samples(self, trainer: L.Trainer, images: torch.Tensor, num_scored: int) -> None:
        """All evaluated samples as uint8 (K, C, H, W) in <dir>/step_XXXXXXX.npz (rank 0), for inspection,
        with the number of samples the statistics were computed from."""
        if not trainer.is_global_zero:
            return
        assert self.save_samples_to is not None
        self.save_samples_to.mkdir(parents=True, exist_ok=True)
        path = self.save_samples_to / f"step_{trainer.global_step:07d}.npz"
        with atomic_file(path) as file:  # whole or not at all: a full disk or a kill leaves no cut-short .npz
            np.savez_compressed(file, images=images.cpu().numpy(), num_scored=np.int64(num_scored))
