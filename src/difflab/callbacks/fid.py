"""FID (or fd_effl0), KID and precision/recall of the EMA model during training, split across DDP ranks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..data.batches import labelled_uint8_batches, uint8_batches
from ..data.conditions import grid_conditions
from ..data.datamodule import ImageDataModule
from ..data.identity import dataset_id
from ..diffusion import Sampler
from ..diffusion.auto_batch import AUTO, generation_batch_size
from ..diffusion.generate import generate, generation_steps
from ..diffusion.precision import check_precision
from ..io.images import to_uint8
from ..metrics.cond_classifier import LinearClassifier
from ..metrics.evaluator import Evaluator
from ..metrics.statistics import Stats, StatsAccumulator
from ..training.ema import ema_network
from ..training.finite import check_losses_so_far
from .progress_bar import busy
from .rank_merge import merge_statistics, sum_over_ranks
from .sharding import gather_in_index_order, rank_indices

SamplerFactory = Callable[..., Sampler]


def conditioning_classifier_for(
    evaluator: Evaluator, data: ImageDataModule, device: torch.device | str
) -> tuple[LinearClassifier, bool]:
    """(classifier, cache hit): the classifier of the conditioning accuracy for this labelled data, fitted
    on its training split and scored on its held-out split (read from the cache when there)."""
    return evaluator.classifier(
        dataset_id(data),
        data.image_size,
        lambda limit: labelled_uint8_batches(data.class_dataset_for("train"), limit=limit),
        lambda: labelled_uint8_batches(data.class_dataset_for("val")),
        device,
    )


class FIDCallback(L.Callback):
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
    ) -> None:
        if num_samples < 2:
            raise ValueError(f"the FID callback needs num_samples >= 2, got {num_samples}")
        self.sampler_factory = sampler
        self.evaluator = metrics if isinstance(metrics, Evaluator) else Evaluator(**dict(metrics))
        self.num_samples = int(num_samples)
        self.every_n_steps = int(every_n_steps)
        self.every_n_epochs = int(every_n_epochs)
        self.at_train_end = at_train_end
        # "auto": as sample.py, the largest batch that fits in free GPU memory (64 on a CPU), probed when scoring.
        self.batch_size = batch_size if batch_size == AUTO else int(batch_size)
        self.seed = int(seed)  # apart from the sample grid's seed, so the grid is not the first 64 samples
        self.save_samples_to = None if save_samples_to is None else Path(save_samples_to)
        self.guidance = float(guidance)
        self.precision = check_precision(precision)  # bf16: the network under autocast, sampler math float32
        self.best_checkpoint = None if best_checkpoint is None else Path(best_checkpoint)
        self._best_score = math.inf  # the lowest Fréchet distance seen, kept in checkpoints for a resume
        self._last_step = -1
        self._reference_stats: Stats | None = None
        self._classifier: LinearClassifier | None = None

    @property
    def monitor(self) -> str:
        """The logged key of the Fréchet distance, e.g. 'val/fd_effl0' (what a ModelCheckpoint monitors)."""
        return f"val/{self.evaluator.fd_key}"

    @property
    def scores_anything(self) -> bool:
        """False when every trigger is off: then the callback costs nothing, not even reference statistics."""
        return self.every_n_steps > 0 or self.every_n_epochs > 0 or bool(self.at_train_end)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self._best_score}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._best_score = float(state_dict.get("best_score", math.inf))

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
        data = trainer.datamodule
        texts_name_classes = getattr(data, "grid_text_classes", None) is not None
        labelled = getattr(data, "condition", None) == "labels" or texts_name_classes
        if self._classifier is None and labelled:
            self._classifier, _ = conditioning_classifier_for(self.evaluator, data, pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last_step:
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
        """Generate and embed this rank's share, merge the statistics, score on rank 0, broadcast; log."""
        self._last_step = trainer.global_step
        check_losses_so_far(pl_module)  # a diverged loss is named as such, not scored
        ranks = trainer.world_size
        keep_per_rank = math.ceil(self.evaluator.keep_features / ranks)
        acc, logits, images, hits = self._embed_my_share(trainer, pl_module, keep_per_rank)
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
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)
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
        net = ema_network(trainer, pl_module)
        was_training = net.training
        net.eval()
        data = trainer.datamodule
        sampler = self.sampler_factory(pl_module.schedule, prediction_type=pl_module.prediction_type)
        shape = (data.channels, data.image_size, data.image_size)
        mine = rank_indices(self.num_samples, trainer.global_rank, trainer.world_size)
        conditions = grid_conditions(data, self.num_samples)
        hits = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        acc = StatsAccumulator(
            self.evaluator.feature_dim, self.evaluator.extractor, keep, seed=trainer.global_rank
        )
        logits, kept_images = [], []
        batch_size = generation_batch_size(
            self.batch_size,
            net,
            len(mine),
            shape,
            conditions.cond_for,
            self.guidance,
            precision=self.precision,
        )
        steps = generation_steps(sampler, len(mine), batch_size)
        with busy(trainer, f"scoring {self.num_samples} samples", steps) as on_step:
            for start in range(0, len(mine), batch_size):
                chunk = mine[start : start + batch_size]
                images = generate(
                    sampler,
                    net,
                    chunk,
                    shape,
                    self.seed,
                    batch_size,
                    conditions.cond_for,
                    self.guidance,
                    on_step=on_step,
                    precision=self.precision,
                )
                images = to_uint8(images)
                features, batch_logits = self.evaluator.embed(images, pl_module.device)
                acc.update(features)
                if self._classifier is not None and conditions.labels is not None:
                    wanted = np.asarray([conditions.labels[i] for i in chunk])
                    hits += float((self._classifier.predict(features) == wanted).sum())
                if batch_logits is not None:
                    logits.append(batch_logits.float())
                if self.save_samples_to is not None:
                    kept_images.append(images)
        net.train(was_training)
        return (
            acc,
            torch.cat(logits) if logits else None,
            torch.cat(kept_images) if kept_images else None,
            hits if self._classifier is not None and conditions.labels is not None else None,
        )

    def _score(self, trainer: L.Trainer, stats: Stats, logits: torch.Tensor | None) -> dict[str, float]:
        """Scores of the merged statistics against the reference statistics."""
        return self.evaluator.scores(stats, self._reference(trainer), logits)

    def _reference(self, trainer: L.Trainer) -> Stats:
        """The reference split's statistics: read from the on-disk cache (or computed into it) once per run."""
        if self._reference_stats is None:
            data = trainer.datamodule
            split = data.dataset_for(self.evaluator.reference_split)
            self._reference_stats, _ = self.evaluator.reference(
                dataset_id(data),
                data.image_size,
                lambda: uint8_batches(split, limit=self.evaluator.num_reference),
                trainer.strategy.root_device,
            )
        return self._reference_stats

    def _save_samples(self, trainer: L.Trainer, images: torch.Tensor, num_scored: int) -> None:
        """All evaluated samples as uint8 (K, C, H, W) in <dir>/step_XXXXXXX.npz (rank 0), for inspection,
        with the number of samples the statistics were computed from."""
        if not trainer.is_global_zero:
            return
        assert self.save_samples_to is not None
        self.save_samples_to.mkdir(parents=True, exist_ok=True)
        path = self.save_samples_to / f"step_{trainer.global_step:07d}.npz"
        np.savez_compressed(path, images=images.cpu().numpy(), num_scored=np.int64(num_scored))
