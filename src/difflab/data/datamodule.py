"""The LightningDataModule: a named image source as batches of (images in [-1, 1], labels), through as many loader
workers as the machine can usefully run."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from difflab.data.captions import CaptionConditions, caption_conditions, resolve_caption_kind
from difflab.data.errors import DataError
from difflab.data.folder import check_class_folders_kept, loose_images, note_if_grayscale
from difflab.data.in_memory import BatchedImageTensors, ImageTensors, already_collated
from difflab.data.index_sampler import ResumableSampler
from difflab.data.sources import (
    RawSplits,
    check_dataset_name,
    download,
    open_splits,
    resolve_root,
    split_dirs,
)
from difflab.data.transforms import ToModelTensor, TransformedDataset, random_hflip
from difflab.data.worker_signals import leaving_stop_signals_to_this_process
from difflab.diffusion.superres import check_sr_factor, low_res_condition
from difflab.generation.task import Task
from difflab.io.decode import check_channels
from difflab.micro_batch_seeds import AUGMENTATION_STREAM, CAPTION_STREAM, MicroBatchSeeds
from difflab.text import DEFAULT_ENCODER, TextTable, encoder_max_tokens, encoder_version

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
# What the second item of a batch carries for the model (None: nothing; the labels are ignored).
# superres: the images' own low-resolution versions (made on the device), the labels ignored;
# text: the captions' encoder states (embedded once into a disk cache).
CONDITIONS = (None, "labels", "text", "superres")
CAPTIONS = (None, "templates", "files")
# How a folder's held-out images are chosen (sources.holdout_split): by each file's name, or by a permutation of
# the files in order, as runs before data.held_out_by held them out (a resume of one keeps it).
HELD_OUT_BY = ("name", "order")

# Sources whose class count is known without opening them; a folder must be scanned to find out.
_KNOWN_NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}


class ImageDataModule(L.LightningDataModule):
    """Batches ``(images, labels)``: float32 ``(N, channels, size, size)`` in [-1, 1] and int64 ``(N,)``.

    Sources (``dataset``):
      - ``digits``: scikit-learn's bundled 1,797 8x8 digits; needs no ``root``; held out: ``val_fraction``.
      - ``mnist`` / ``fashion_mnist``: torchvision's copy in ``root`` (``root/MNIST/raw``,
        ``root/FashionMNIST/raw``); held out: the official test split.
      - ``cifar10``: torchvision's ``root/cifar-10-batches-py`` when present, otherwise image folders
        ``root/train/<class>/`` and ``root/test/<class>/`` (the JPEG release); held out: the test split.
      - ``folder``: any image tree under ``root``, searched recursively. If its top level holds only
        subfolders, each is a class (sorted names -> 0, 1, ...); otherwise labels are -1. With
        ``root/train`` and ``root/val`` (or ``root/test``) those are the splits, else ``val_fraction`` of
        the images is held out with ``split_seed`` (at least one image when there are two or more), chosen
        by each file's name (``held_out_by="name"``: an image added moves at most one other across) or by a
        permutation of the files in order (``"order"``, as runs before the option held them out).
        Files whose header cannot be read are skipped while scanning, with one warning counting them;
        decodability is checked lazily: an undecodable file (e.g. a JPEG cut short) is skipped when it is
        loaded, replaced by the next decodable image of its split, with a warning naming it.

    ``batch_size`` is per device: every DataLoader (one per DDP rank) yields batches of that size. A train
    split smaller than one batch per device is repeated to fill one (with a warning), so a folder of ten
    images trains with the default settings. ``num_workers`` is lowered to the CPU cores available.
    Transforms (``difflab.io.decode``, shared with evaluation and editing): EXIF orientation applied,
    16-bit rescaled, convert to ``channels`` (alpha composited onto white, RGB -> L by luma, L -> RGB by
    replication), resize the shorter side to ``image_size`` (bicubic, antialiased), centre crop. Sources held
    in memory (digits, MNIST, Fashion-MNIST, pickled CIFAR-10) are transformed once (each image when first
    read) and served as tensors, a batch per gather (``in_memory``); folders and CIFAR-10's JPEGs decode per
    image in the loader's workers. The transforms are deterministic: ``random_flip`` mirrors training batches on the device
    (``on_after_batch_transfer``), drawn from a generator seeded from (seed, global step, micro-batch, rank),
    so that a resumed run flips exactly as an uninterrupted one.

    ``condition="superres"`` (SR3): the condition of each image is its own low-resolution version
    (``image_size / sr_factor``, antialiased bicubic), upsampled bicubically back to ``image_size`` and clamped
    to [-1, 1] (``cond["low_res"]``), made on the device after the flips. Training batches add Gaussian noise
    to the small image with a σ ~ U(0, ``sr_noise``) per sample (noise-conditioning augmentation; the σ is
    not given to the net), drawn from the same per-micro-batch generator as the flips; validation and the
    sample grid use clean pairs.

    The training order is a function of ``seed``, the epoch and the DDP rank (``ResumableSampler``): each rank
    takes its own share of every epoch's permutation (so the Trainer must not add a DistributedSampler:
    ``use_distributed_sampler=False``), and after a resume the loader starts at the batch the restored
    ``trainer.global_step`` points to. Validation is not sharded: every rank scores the whole held-out split.

    ``condition="text"`` (text-to-image): the second item becomes a cond dict of frozen text-encoder states
    (``text`` (N, max_tokens, D), ``text_mask``, ``text_pooled``). ``captions="templates"`` builds captions
    from class names with several templates, one drawn per sample and step from (seed, step, micro-batch,
    rank), so resumes draw alike; ``"files"`` reads a folder's ``metadata.jsonl`` (file_name, text) or a
    ``.txt`` beside each image; null picks files for a folder that has them, else templates. Each distinct
    caption is encoded once and cached under ``text_cache_dir`` (default ~/.cache/difflab/text_embeddings).

    ``class_folders``: the class folders a labelled model was trained on, in label order (train.py records the
    ones it found); a folder tree whose class folders differ is refused, since its labels would mean other classes.
    """

    def __init__(
        self,
        dataset: str,
        root: str | None = None,
        image_size: int = 16,
        channels: int = 1,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        random_flip: bool = False,
        val_fraction: float = 0.05,
        split_seed: int = 0,
        held_out_by: str = "name",
        download: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
        condition: str | None = None,
        sr_factor: int = 4,
        sr_noise: float = 0.0,
        captions: str | None = None,
        max_tokens: int = 16,
        text_encoder: str = DEFAULT_ENCODER,
        text_encoder_version: str | None = None,
        text_cache_dir: str | None = None,
        class_folders: list[str] | None = None,
    ) -> None:
        super().__init__()
        if condition not in CONDITIONS:
            raise DataError(
                f"unknown data.condition {condition!r}; choose one of null, {', '.join(CONDITIONS[1:])}"
            )
        if held_out_by not in HELD_OUT_BY:
            raise DataError(
                f"unknown data.held_out_by {held_out_by!r}; choose one of {', '.join(HELD_OUT_BY)}"
            )
        if captions not in CAPTIONS:
            raise DataError(
                f"unknown data.captions {captions!r}; choose one of null, {', '.join(CAPTIONS[1:])}"
            )
        if max_tokens < 1:
            raise DataError(f"data.max_tokens must be at least 1, got {max_tokens}")
        if condition == "text" and max_tokens > encoder_max_tokens(text_encoder):
            raise DataError(
                f"data.max_tokens={max_tokens} is more than the {encoder_max_tokens(text_encoder)} tokens "
                f"{text_encoder} reads of a caption: give at most {encoder_max_tokens(text_encoder)}"
            )
        # Validate eagerly so a bad override fails at instantiation, before any training starts.
        check_dataset_name(dataset)
        check_channels(channels)
        if image_size < 1:
            raise DataError(f"image_size must be at least 1, got {image_size}")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise DataError(f"num_workers must be 0 or more, got {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if condition == "superres":
            try:
                check_sr_factor(sr_factor, image_size)
            except ValueError as error:
                raise DataError(f"data.{error}") from None
        if not sr_noise >= 0:
            raise DataError(
                f"data.sr_noise must be 0 or more (the largest σ of the low-res noise), got {sr_noise}"
            )
        if dataset != "digits":
            # An unset root fails now; a missing directory is allowed, since prepare_data may download it.
            resolve_root(dataset, root, must_exist=False)
        elif root is not None:  # `train.py data.root=<my images>` without data=folder trained on the digits
            raise DataError(
                f"data.root={root} is not read by data=digits (scikit-learn's bundled digits need no folder): add "
                "data=folder to train on the images there"
            )
        self.dataset = dataset
        self.root = None if root is None else Path(root)
        self.image_size = image_size
        self.channels = channels
        self.batch_size = batch_size
        self.num_workers = usable_workers(num_workers)
        self.pin_memory = pin_memory
        self.random_flip = random_flip
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.held_out_by = held_out_by
        self.download = download
        self.persistent_workers = persistent_workers
        self.seed = seed
        self.condition = condition
        self.sr_factor = sr_factor
        self.sr_noise = float(sr_noise)
        self.captions = captions
        self.max_tokens = max_tokens
        self.text_encoder = text_encoder
        self.text_encoder_version = text_encoder_version
        self.text_cache_dir = text_cache_dir
        self.recorded_class_folders = None if class_folders is None else list(class_folders)
        self._captions: CaptionConditions | None = None
        self._caption_seeds = MicroBatchSeeds(seed, CAPTION_STREAM)
        self._flip_seeds = MicroBatchSeeds(seed, AUGMENTATION_STREAM)
        self._splits: RawSplits | None = None
        self._train_sampler: ResumableSampler | None = None
        self._datasets: dict[str, Dataset] = {}
        self._class_splits: RawSplits | None = None  # captions from files: the splits with their class labels

    @property
    def num_classes(self) -> int | None:
        """Number of label classes, None when unlabelled (a folder source is scanned to find out)."""
        if self._splits is None and self.dataset in _KNOWN_NUM_CLASSES:
            return _KNOWN_NUM_CLASSES[self.dataset]
        self.setup()
        assert self._splits is not None
        return self._splits.num_classes

    @property
    def class_folders(self) -> list[str] | None:
        """A folder tree's class folders in label order (None: a source that names none on disk)."""
        if self.dataset != "folder":
            return None
        self.setup()
        assert self._splits is not None
        return self._splits.class_folders

    def prepare_data(self) -> None:
        """Download a torchvision source into ``root`` if ``download`` is set (Lightning: once per node)."""
        if self.download:
            download(self.dataset, self.root)

    def setup(self, stage: str | None = None) -> None:
        """Open both splits once; later calls (any stage) reuse them."""
        if self._splits is not None:
            return
        # Text runs take captions from class folders too; a labelled model's data is read by its labels.
        labelled = self.condition in ("labels", "text") or self.recorded_class_folders is not None
        splits = open_splits(
            self.dataset, self.root, self.val_fraction, self.split_seed, labelled, self.held_out_by == "name"
        )
        if self.dataset == "folder":
            note_if_grayscale(getattr(splits.train, "samples", []), self.channels, self.root)
        if self.condition == "labels" and not splits.num_classes:
            raise DataError(self._no_classes_message())
        # The model's classes, wherever they are given (evaluate.py hands a labelled model's to any data=, whose
        # labels conditioning accuracy then scores by, data.condition or not).
        if self.condition == "labels" or self.recorded_class_folders is not None:
            check_class_folders_kept(
                self.recorded_class_folders,
                splits.class_folders,
                self.root,
                self.dataset,
                labelled=splits.num_classes is not None,
            )
        if self.condition == "text":
            labelled = splits
            self._captions, splits = self._caption_conditions(splits)
            if splits is not labelled and labelled.num_classes:
                self._class_splits = labelled
        self._datasets = {
            "train": self._transformed(splits.train, splits.in_memory),
            "val": self._transformed(splits.val, splits.in_memory),
        }
        self._splits = splits

    def _no_classes_message(self) -> str:
        """Why data.condition=labels found no classes: for a folder with class folders, the images beside them;
        for one with none, that it has none."""
        message = (
            f"data.condition=labels needs labelled images, but {self.dataset} at {self.root} has no classes"
        )
        if self.dataset == "folder":
            train_dir, _ = split_dirs(resolve_root(self.dataset, self.root))
            loose = loose_images(train_dir)
            if loose:
                return (
                    f"{message}: {len(loose)} image(s) lie beside its class folders ({', '.join(loose[:3])}); move "
                    "them into a class folder, or out of the tree"
                )
            # Before, a subfolder holding no image made a flat folder's images "lie beside its class folders".
            return (
                f"data.condition=labels needs labelled images, but folder at {self.root} has no class folders "
                "(one subfolder of images per class)"
            )
        return f"{message} (a folder needs one subfolder per class)"

    def _transformed(self, images: Dataset, in_memory: bool) -> Dataset:
        """A split as model tensors: each image transformed once and kept when the images are in memory, else
        per image each time it is loaded (a folder's files are decoded in the DataLoader's workers)."""
        if in_memory:
            return ImageTensors(images, self.image_size, self.channels)
        return TransformedDataset(images, ToModelTensor(self.image_size, self.channels))

    def _caption_conditions(self, splits: RawSplits) -> tuple[CaptionConditions, RawSplits]:
        kind = resolve_caption_kind(self.captions, self.dataset, self.root)
        version = self.text_encoder_version or encoder_version(self.text_encoder)
        return caption_conditions(
            splits,
            kind,
            self.dataset,
            self.root,
            self.text_encoder,
            version,
            self.max_tokens,
            self.text_cache_dir,
        )

    @property
    def grid_texts(self) -> TextTable | None:
        """The fixed captions a sample grid of a text-to-image run shows (one row each); None otherwise."""
        if self.condition != "text":
            return None
        self.setup()
        assert self._captions is not None
        return self._captions.grid_texts()

    @property
    def grid_text_classes(self) -> list[int] | None:
        """The class each grid caption names (templates, or captions from files of labelled images); None when
        the captions name no classes, or for a model that is not text-to-image."""
        if self.condition != "text":
            return None
        self.setup()
        assert self._captions is not None
        return self._captions.grid_classes()

    def generation_task(self, n: int) -> Task:
        """What this data's model is conditioned on, as plain data for generation (grids and scores of n
        samples): the classes, the grid's prompts, or the first n held-out images for super-resolution."""
        task = Task((self.channels, self.image_size, self.image_size), self.condition)
        if self.condition == "labels":
            return replace(task, num_classes=self.num_classes)
        if self.condition == "text":
            return replace(task, prompts=self.grid_texts, prompt_classes=self.grid_text_classes)
        if self.condition == "superres":
            return replace(task, held_out=self._held_out_images(n), sr_factor=self.sr_factor)
        return task

    def _held_out_images(self, n: int) -> torch.Tensor:
        """The first n held-out images (all of them when there are fewer)."""
        val = self.dataset_for("val")
        if len(val) == 0:
            raise ValueError(
                f"the held-out split of {self.dataset} is empty: no low-res inputs for the sample grid"
            )
        return torch.stack([val[i][0] for i in range(min(n, len(val)))])

    def class_dataset_for(self, split: str) -> Dataset:
        """dataset_for(split) with each image's class as its second item (what a conditioning classifier is fitted
        on): the same dataset except for captions from files, whose items carry caption ids."""
        if self._class_splits is None:
            return self.dataset_for(split)
        raw = self._class_splits.train if split == "train" else self._class_splits.val
        return self._transformed(raw, self._class_splits.in_memory)

    def dataset_for(self, split: str) -> Dataset:
        """The un-augmented dataset of ``"train"`` or ``"val"`` (e.g. for evaluation reference statistics)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.setup()
        return self._datasets[split]

    def train_dataloader(self) -> DataLoader:
        """This rank's shuffled batches, from where the run stands; every step sees batch_size images."""
        self.setup()
        dataset = self._datasets["train"]
        size = len(dataset)  # type: ignore[arg-type]
        if size == 0:
            raise DataError(f"train split of {self.dataset} is empty")
        trainer = self.trainer
        sampler = ResumableSampler(
            size,
            self.batch_size,
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            position=self._batches_consumed,
        )
        if sampler.repeats > 1:
            world = sampler.world_size
            per_step = f"one batch of {self.batch_size}" + (
                f" on each of {world} devices ({self.batch_size * world} a step)" if world > 1 else ""
            )
            rank_zero_warn(
                f"train split of {self.dataset} has {size} images, fewer than {per_step}: it is repeated "
                f"{sampler.repeats} times per epoch to fill one"
            )
        self._train_sampler = sampler
        return self._loader(dataset, sampler=sampler, drop_last=True)

    def _batches_consumed(self) -> int:
        """Batches of the train loader this rank has trained on, from the trainer's global step.

        An epoch of B batches with gradient accumulation A takes ceil(B / A) optimizer steps (Lightning steps
        on the epoch's last, shorter group too). Read when an iteration starts, i.e. after a checkpoint has
        been restored, so it also places a resumed run mid-epoch.
        """
        trainer, sampler = self.trainer, self._train_sampler
        if trainer is None or sampler is None or sampler.batches_per_epoch == 0:
            return 0
        per_epoch = sampler.batches_per_epoch
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        epoch, steps = divmod(trainer.global_step, -(-per_epoch // accumulate))
        return epoch * per_epoch + min(steps * accumulate, per_epoch)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: flip training batches at random (from this micro-batch's own generator), then turn
        the batch's second item into the model's condition dict when the task is conditional.

        Lightning calls this before on_train_batch_start, so the global generator has not been reseeded for
        the step yet: the flips come from a generator of their own, seeded the same way.
        """
        images, *rest = batch
        trainer = self.trainer
        training = trainer is not None and trainer.training
        generator = None
        if training and (self.random_flip or self._augments_condition):
            generator = torch.Generator(device=images.device).manual_seed(self._flip_seeds.next(trainer))
        if self.random_flip and training:
            images = random_hflip(images, generator)
        if self.condition is None:
            return batch if images is batch[0] else [images, *rest]  # untouched: the batch itself
        return [images, self.condition_of(rest[0], images, generator)]

    @property
    def _augments_condition(self) -> bool:
        return self.condition == "superres" and self.sr_noise > 0

    def condition_of(
        self, item: Any, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The model's condition for a batch: from its second item (labels) and, for some tasks, its images.
        `generator` (training batches only) draws any random augmentation of the condition."""
        if self.condition == "text":
            assert self._captions is not None
            trainer = self.trainer
            training = trainer is not None and trainer.training
            seeded = torch.Generator().manual_seed(self._caption_seeds.next(trainer)) if training else None
            return self._captions.condition(item, images.device, seeded)
        if self.condition == "superres":
            noise = self.sr_noise if generator is not None else 0.0
            return {"low_res": low_res_condition(images, self.sr_factor, noise, generator)}
        return {"labels": item}

    def val_dataloader(self) -> DataLoader:
        """The held-out split in a fixed order, un-augmented, keeping the last partial batch."""
        return self._loader(self.dataset_for("val"), drop_last=False)

    def _loader(
        self, dataset: Dataset, drop_last: bool, sampler: ResumableSampler | None = None
    ) -> DataLoader:
        """A DataLoader with this module's worker and memory settings (in order unless a sampler is given).
        A split held as tensors is served a batch at a time (one gather, no per-image work or collation)."""
        collate_fn = None
        if isinstance(dataset, ImageTensors):
            dataset, collate_fn = BatchedImageTensors(dataset), already_collated
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            collate_fn=collate_fn,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # DataLoader rejects persistent_workers without worker processes.
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            worker_init_fn=leaving_stop_signals_to_this_process(),
        )


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM allocation), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def usable_workers(requested: int) -> int:
    """``requested`` lowered to the available cores: more workers than cores only contend (and torch warns)."""
    cores = available_cpus()
    if requested <= cores:
        return requested
    _say_workers_lowered(requested, cores)
    return cores


@functools.cache  # once per process: a labelled run builds its datamodule twice (its classes are counted first)
def _say_workers_lowered(requested: int, cores: int) -> None:
    log.info("data.num_workers=%d lowered to %d, the CPU cores available to this process", requested, cores)
