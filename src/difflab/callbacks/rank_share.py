"""What the grid and FID callbacks share: generating this rank's share of their samples. The EMA network in eval
mode generates samples rank, rank + W, … of the data's task (one generation request), so no two ranks draw
the same sample; gather_in_index_order puts the ranks' rows back in order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import lightning as L
import torch

from ..checkpoint import LoadedModel, load_model
from ..diffusion import NoiseSchedule, Sampler
from ..diffusion.auto_batch import AUTO
from ..diffusion.formulations.timestep_face import sampling_view
from ..diffusion.precision import check_precision
from ..generation import Generation, GenerationRequest, Task, grid_conditions
from ..generation.autoguide import check_guide
from ..generation.methods import Sampling
from ..generation.requested import warn_if_never_unconditional
from ..generation.sampler import bound_sampler
from ..training.ema import ema_network
from .sharding import rank_indices

SamplerFactory = Callable[..., Sampler]


class GeneratingCallback(L.Callback):
    """A callback that generates `num_samples` samples of the data's task with the EMA weights: `sampler` (a
    partial taking the schedule), sample i from the noise of (seed, i), classifier-free guidance of scale
    `guidance`, the network under `precision` (bf16: autocast, sampler math float32). batch_size "auto": as
    sample.py, the largest batch that fits in free GPU memory (64 on a CPU). `guide`: a weaker checkpoint of the
    same data for autoguidance at scale `guidance` (loaded and checked once, at the first generation)."""

    def __init__(
        self,
        sampler: SamplerFactory,
        num_samples: int,
        seed: int,
        batch_size: int | str,
        guidance: float = 1.0,
        precision: str = "fp32",
        guide: str | None = None,
    ) -> None:
        self.sampler_factory = sampler
        self.guide = guide
        self._guide: LoadedModel | None = None
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.batch_size = batch_size if batch_size == AUTO else int(batch_size)
        self.guidance = float(guidance)
        check_precision(precision)
        self.precision = precision

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Classifier-free guidance of a model that never saw its condition dropped: said once, before training.
        if self.guide is None and trainer.is_global_zero:
            condition = getattr(trainer.datamodule, "condition", None)
            drop = getattr(pl_module, "cond_drop_prob", None)
            warn_if_never_unconditional(
                condition, drop, self.guidance, f"the {type(self).__name__} of this run"
            )

    @contextlib.contextmanager
    def my_share(self, trainer: L.Trainer, pl_module: L.LightningModule, task: Task) -> Iterator[Generation]:
        """The generation of this rank's share of the samples of `task` (balanced conditions, as grid_conditions
        sets them), with the EMA network in eval mode while the context lasts."""
        net = ema_network(trainer, pl_module)
        was_training = net.training
        net.eval()
        try:
            # EDM and flow networks are sampled through their ε-face on a table of their noise levels.
            sampling_net, schedule, prediction_type = sampling_view(
                net, pl_module.schedule, pl_module.prediction_type, getattr(pl_module, "formulation", None)
            )
            # Latent diffusion: grids and scores see decoded images, and latents are not clipped to [-1, 1].
            decode = getattr(trainer.datamodule, "decode", None)
            sampler = bound_sampler(
                self.sampler_factory, schedule, prediction_type, latent=decode is not None
            )
            request = GenerationRequest(
                Sampling(sampler, task.sample_shape),
                rank_indices(self.num_samples, trainer.global_rank, trainer.world_size),
                self.seed,
                self.batch_size,
                self.guidance,
                self.precision,
                grid_conditions(task, self.num_samples),
                guide=self.guide_net(pl_module, task, schedule, prediction_type),
                decode=decode,
            )
            yield Generation(request, sampling_net)
        finally:
            net.train(was_training)

    def guide_net(
        self, pl_module: L.LightningModule, task: Task, schedule: NoiseSchedule, prediction_type: str
    ) -> torch.nn.Module | None:
        """The guide's network on the module's device (None without a guide), checked against the model trained
        (as it samples: `schedule` and `prediction_type` of its sampling view)."""
        if self.guide is None:
            return None
        if self._guide is None:
            formulation = getattr(pl_module, "formulation", None)
            config = task_config(task)
            trained = LoadedModel(pl_module.net, schedule, prediction_type, config, "raw", 0, formulation)
            guide = load_model(self.guide, pl_module.device)
            check_guide(trained, guide, "the model being trained", self.guide)
            self._guide = guide
        return self._guide.sampling_net.eval()


def task_config(task: Task) -> dict:
    """The part of a run's config that says what `task`'s model makes, as a checkpoint stores it."""
    channels, size, _ = task.sample_shape
    data = {"channels": channels, "image_size": size, "condition": task.condition}
    return {"data": data, "model": {"num_classes": task.num_classes}}
