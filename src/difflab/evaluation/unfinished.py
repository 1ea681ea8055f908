"""An evaluation stopped part-way (SIGTERM at a cluster's time limit, Ctrl-C, out of memory, a process of its job
that failed) keeps what it had scored: the running statistics of its first images, in the metric cache under a name
made from every setting that decides them. The same command continues from the next image and reports what an
unstopped run reports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..cluster.stop_signal import StoppedBySignal, stops_held
from ..data import ImageDataModule
from ..data.scoring import dataset_id
from ..generation import SampleOptions
from ..generation.resume import ResumePlan
from ..generation.set_identity import set_identity
from ..io.atomic import atomic_file
from ..io.stored_checkpoint import torch_load_reason
from ..metrics import Evaluator

log = logging.getLogger("difflab")

FOLDER = "unfinished"  # in the metric cache
# How often a running evaluation keeps what it has scored: a 10k-feature sample is 160 MB to write.
KEEP_EVERY_S = 300.0
# The metric settings that change what scoring keeps per image (features, logits, predicted labels).
DECIDING_METRIC_SETTINGS = (
    *("extractor", "inception_weights", "keep_features", "inception_score", "batch_size"),
    "classifier_train_images",
)


@dataclass
class ScoredSoFar:
    """The first `done` images of a set as scoring has them: the running statistics of their features, their
    Inception-Score logits and a conditional model's labels predicted for them (lists of one tensor per batch)."""

    statistics: Any  # a metrics.statistics.StatsAccumulator
    logits: list[Tensor] = field(default_factory=list)
    predicted: list[Tensor] = field(default_factory=list)
    done: int = 0
    # The kept file continued from, or found unusable (device, inode): the one a finished evaluation removes.
    continued_from: tuple[int, int] | None = None

    def add(self, features: Tensor, logits: Tensor | None, predicted: Tensor | None) -> None:
        """One batch's results, taken in whole or not at all: a stop arriving meanwhile acts once they are."""
        with stops_held():
            self.statistics.update(features)
            if logits is not None:
                self.logits.append(logits)
            if predicted is not None:
                self.predicted.append(predicted)
            self.done += len(features)


@dataclass(frozen=True)
class UnfinishedEvaluation:
    """Where an evaluation of these settings (`identity`) keeps what it had scored when it is stopped."""

    path: Path
    identity: dict[str, Any]

    @classmethod
    def of(
        cls,
        options: SampleOptions,
        sampler_config: dict[str, Any],
        loaded: Any,
        guide: Any,
        evaluator: Evaluator,
        data: ImageDataModule,
    ) -> UnfinishedEvaluation:
        """The place of a checkpoint's evaluation: what decides its images (as for sample.py's sets), the metric
        settings that decide what is kept of each, and the reference data (its classifier predicts the labels)."""
        identity = set_identity(options, sampler_config, loaded, guide)
        settings = evaluator.settings()
        identity["metrics"] = {key: settings[key] for key in DECIDING_METRIC_SETTINGS}
        identity["reference"] = f"{dataset_id(data)} at {data.image_size}px"
        as_json = json.dumps(identity, sort_keys=True, default=str)
        digest = hashlib.sha256(as_json.encode()).hexdigest()[:16]
        # Kept as JSON has it (tuples as lists, paths as text): what the file holds compares equal to it.
        return cls(Path(settings["cache_dir"]) / FOLDER / f"evaluate_{digest}.pt", json.loads(as_json))

    def read(self, evaluator: Evaluator, n: int) -> tuple[ScoredSoFar, ResumePlan | None]:
        """What a stopped evaluation of these settings had scored, and how its set goes on (the batch size and CPU
        threads it was started with); nothing scored and no plan when none was stopped, or its file cannot be
        continued from (said: the evaluation that finishes removes that file)."""
        nothing = ScoredSoFar(evaluator.accumulator())
        if not self.path.exists():
            return nothing, None
        kept = _file_identity(self.path)
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if state["identity"] != self.identity:
                raise ValueError("it was made with other settings")
            statistics = evaluator.accumulator()
            statistics.load_state_dict(state["statistics"])
            done, batch_size = int(state["done"]), int(state["batch_size"])
            if not 0 < done < n or done % batch_size:
                raise ValueError(f"it holds {done} images of {n} scored in batches of {batch_size}")
        except Exception as error:
            log.warning(
                "%s cannot be continued from (%s): starting over", self.path, torch_load_reason(error)
            )
            return replace(nothing, continued_from=kept), None
        so_far = ScoredSoFar(statistics, _listed(state["logits"]), _listed(state["predicted"]), done, kept)
        plan = ResumePlan(n, batch_size, frozenset(range(done // batch_size)), state["cpu_threads"])
        return so_far, plan

    def keep(self, so_far: ScoredSoFar, source: dict[str, Any]) -> str:
        """Write what was scored (`source`: the report's entry for the set, with the batch size and CPU threads
        generation chose); the line that says where it is and how to go on."""
        state = {
            "identity": self.identity,
            "done": so_far.done,
            "batch_size": int(source["batch_size"]),
            "cpu_threads": source.get("cpu_threads"),
            "statistics": so_far.statistics.state_dict(),
            "logits": torch.cat(so_far.logits) if so_far.logits else None,
            "predicted": torch.cat(so_far.predicted) if so_far.predicted else None,
        }
        scored = f"{so_far.done} of its {source['n']} images were scored"
        if so_far.done % state["batch_size"]:
            # Continued in batches of another size: a file saying so could not be continued from (its batches
            # would not add up), so what was kept before stays the one to continue from.
            again = "; the same command continues from what was kept before" if self.path.exists() else ""
            return f"{scored} in batches of two sizes, so not kept again{again}"
        problem = self._written(state)
        if problem:
            return f"{scored} but could not be kept ({problem}): the same command starts over"
        return f"{scored} and kept in {self.path}: the same command continues from there"

    def _written(self, state: dict[str, Any]) -> str | None:
        """Write `state` whole to the file; what stopped it, else None."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.path) as file:
                torch.save(state, file)
        except Exception as error:
            return _first_line(error)
        return None

    def kept_as_it_goes(
        self, batches: Iterable[Tensor], so_far: ScoredSoFar, source: dict[str, Any]
    ) -> Iterator[Tensor]:
        """`batches`, with what was scored kept every KEEP_EVERY_S seconds (once a batch is taken in): a process
        killed outright (SIGKILL: the out-of-memory killer, a node lost, a job past its grace period), which no
        handler sees, loses that much work and the batch under way. Before, it lost all of it."""
        last = time.monotonic()
        for batch in batches:
            yield batch  # scored and added to so_far when the next one is asked for
            if time.monotonic() - last < KEEP_EVERY_S or not 0 < so_far.done < int(source["n"]):
                continue
            last = time.monotonic()
            if so_far.done % int(source["batch_size"]):
                continue  # continued in batches of another size: what was kept before stays (see keep)
            before = _file_identity(self.path)
            with stops_held():
                note = self.keep(so_far, source)
            written = _file_identity(self.path)  # an atomic write makes a new file
            if written is None or written == before:
                log.warning("evaluate.py goes on, but %s", note.replace(": the same command starts over", ""))
            else:
                so_far.continued_from = written  # this evaluation's own: removed as it ends

    @contextlib.contextmanager
    def kept_when_stopped(self, so_far: ScoredSoFar, source: dict[str, Any]) -> Iterator[None]:
        """Whatever stops the block keeps what was scored by then (and says so in the error's last note); a block
        that ends has no more use for the file it continued from. A file another evaluation of the same settings
        kept meanwhile (two side by side, one of them stopped) is that one's to continue from, and stays."""
        try:
            yield
        except BaseException as stop:
            if not 0 < so_far.done < int(source["n"]):
                raise
            # A stop that follows (torchrun's SIGTERM once a peer died) waits for the file.
            try:
                with stops_held():
                    note = self.keep(so_far, source)
            except (StoppedBySignal, KeyboardInterrupt) as later:
                later.add_note(note)  # the stop is what ends the process: its line says what was kept
                raise later from stop
            stop.add_note(note)
            raise
        if so_far.continued_from is not None and _file_identity(self.path) == so_far.continued_from:
            self.path.unlink(missing_ok=True)

    def continuing_line(self, plan: ResumePlan, batch_size: int) -> tuple[Any, ...]:
        """The log line (format and values) of an evaluation that continues, `batch_size` being the one used now."""
        how = "as it was started"
        if batch_size != plan.batch_size:
            how = f"not {plan.batch_size} as it was started: each image still starts from its own noise, but "
            how += "may differ from an unstopped run's in rounding"
        text = "continuing a stopped evaluation (%s): %d of %d images were scored; "
        text += "generating the other %d in batches of %d, %s"
        return text, self.path, plan.on_disk, plan.count, plan.count - plan.on_disk, batch_size, how


def _file_identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (an atomic rewrite makes a new one); None when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _listed(tensor: Tensor | None) -> list[Tensor]:
    return [] if tensor is None else [tensor]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
