"""Every touch of a private name of Lightning, Hydra, W&B or torch, in one place: what it
does, why difflab needs it, and which public API would replace it. The rest of difflab calls these helpers and never
imports a library's `_names`; tests/test_compat.py checks that, and checks each touch against the installed versions
and names the one that changed.
Where a public API does the job it is used instead: `LightningModule.trainer` (not `_trainer`), torch's
`get_ema_multi_avg_fn` for the classic EMA, `str | Path` (not Lightning's `_PATH`), and W&B's own
`wandb.login(prompt=False)` for "is a login configured". difflab reads no W&B file: compare reads the run's own
metrics.jsonl; only the tests read W&B's private offline run format (tests/wandb_files.py, checked there too).

Lightning, W&B and torch are imported for type hints or inside the helpers only: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
    from lightning.pytorch.loggers import WandbLogger
    from torch import device
    from torch.distributed.checkpoint import StorageReader
    from torch.distributed.checkpoint.planner import LoadPlanner
    from torch.optim.swa_utils import AveragedModel


# --- Lightning's training loop ----------------------------------------------------------------------------------


def set_logging_step(trainer: L.Trainer, step: int) -> None:
    """Make the metrics Lightning logs next land at `step`.

    Touch: TrainingEpochLoop._batches_that_stepped, the step Lightning's logger connector hands every logger.
    Why: it equals the global step with one optimizer, but after a resume from a checkpoint written when training
    ended right after a validation, Lightning 2.6 counts the skipped re-validation as a step and every later point
    lands one step late (training.step_seeding keeps it equal to the global step).
    Public replacement: a `step` metric logged beside every metric (Lightning then logs at it), which the module
    and every callback that logs would have to add.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    if hasattr(epoch_loop, "_batches_that_stepped"):
        epoch_loop._batches_that_stepped = step


_SIGTERM_BROADCAST = "_broadcast_sigterm_tensor"


def skip_sigterm_broadcast(trainer: L.Trainer) -> Callable[[], None] | None:
    """Switch off the broadcast of rank 0's SIGTERM flag that Lightning's training loop makes before every batch
    under DDP; returns the function that switches it back on (None where this Lightning makes no such broadcast).

    Touch: TrainingEpochLoop._broadcast_sigterm_tensor, shadowed on the loop instance by a no-op.
    Why: a collective and a host read per step, for a flag that only Lightning's SIGTERM handler sets; while
    training.preemption's CheckpointOnSignal handles SIGTERM that handler never runs, so it could only send 0.
    Public replacement: none yet (a Trainer option to leave SIGTERM to the user, or no broadcast without Lightning's
    own handler installed).
    """
    loop = trainer.fit_loop.epoch_loop
    if not callable(getattr(type(loop), _SIGTERM_BROADCAST, None)):
        return None
    setattr(loop, _SIGTERM_BROADCAST, lambda: None)
    return lambda: vars(loop).pop(_SIGTERM_BROADCAST, None)


def log_step_before_stopping(trainer: L.Trainer) -> None:
    """Hand the loggers the metrics of the step that has just ended, from its on_train_batch_end, as Lightning
    would right after that hook (every rank calls it: a metric logged with sync_dist is reduced over them).

    Touch: trainer._logger_connector.update_train_step_metrics, what TrainingEpochLoop.advance calls after the
    on_train_batch_end hooks (it logs only at log_every_n_steps, as then).
    Why: a stop signal saves and stops in on_train_batch_end (training.preemption), before that call, so the
    saved step's loss and learning rate were missing from every logger: a gap in the curves the resume continues.
    Public replacement: none (no hook runs after a step's metrics are logged and before the next batch).
    """
    trainer._logger_connector.update_train_step_metrics()


def finish_when_resumed_at_the_limit(trainer: L.Trainer) -> None:
    """Make a fit resumed from a checkpoint already at its step or epoch limit still run the train-start and
    train-end hooks (trains nothing): the final sample grid and FID, which a stop while they ran left unmade.

    Touch: FitLoop.skip, overridden on the instance's class (a subclass made here) while trainer.ckpt_path is set.
    Why: Lightning skips the whole fit loop when it is done at its start, so on_train_end never runs: the resume
    that `train.py stopped by SIGTERM ... resume with ckpt_path=last` advises ended rc 0 with no final.png.
    Public replacement: none (a Trainer option to run on_train_end on a finished resume).
    """
    loop = trainer.fit_loop
    finishing = __getattr__("FinishingFitLoop")
    # Lightning's own loop only (a loop a user configured is left as it is).
    if type(loop) is finishing.__base__:
        loop.__class__ = finishing


def _finishing_fit_loop() -> type:
    """FitLoop with finish_when_resumed_at_the_limit's `skip`. Touch: lightning.pytorch.loops.fit_loop._FitLoop,
    subclassed. Made on first use (importing this module costs nothing) and reached by name as
    difflab.compat.FinishingFitLoop, so a Trainer that holds it pickles (ddp_spawn sends the Trainer to its
    processes; a class made inside a function could not be pickled)."""
    from lightning.pytorch.loops.fit_loop import _FitLoop

    class FinishingFitLoop(_FitLoop):
        @property
        def skip(self) -> bool:
            if self.trainer.ckpt_path is None or self.trainer.limit_train_batches == 0:
                return super().skip
            # max_batches is 0 only for an empty loader: nothing to train or to evaluate then.
            return self.max_batches == 0

    FinishingFitLoop.__module__, FinishingFitLoop.__qualname__ = __name__, "FinishingFitLoop"
    return FinishingFitLoop


def __getattr__(name: str) -> Any:
    """The classes made on first use (a module's __getattr__, PEP 562): pickle finds them by name here."""
    if name == "FinishingFitLoop":
        made = globals()[name] = _finishing_fit_loop()
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- Lightning's DDP launcher -----------------------------------------------------------------------------------


def end_launched_processes(trainer: L.Trainer, grace_s: float = 1.0) -> dict[int, int]:
    """End the DDP processes Lightning started beside this one (rank 0's children): give them up to `grace_s`
    seconds, until one of them has ended by itself (one that failed first is ending; the others wait in a
    collective), then kill the others and wait for them. Returns {local rank: exit code} of those that ended by
    themselves, 0 included ({} where Lightning started none: one process, torchrun, srun).

    Touch: `strategy.launcher.procs`, the Popen list of Lightning's _SubprocessScriptLauncher, which its
    _ChildProcessObserver thread polls; the list is emptied first, so the observer (which kills this process too
    once a child has ended with an error) sees no child left and stops.
    Why: Lightning kills the children when rank 0 is interrupted (Ctrl-C) but not when it fails: they would wait for
    it in their next collective (NCCL: for its timeout, 30 minutes, with their GPUs held).
    Public replacement: none (Lightning's own `launcher.kill(signal)` leaves the observer to kill rank 0).
    """
    import time

    children = getattr(trainer.strategy.launcher, "procs", None)
    if not children:
        return {}
    watched = list(children)
    children.clear()
    deadline = time.monotonic() + grace_s
    while all(child.poll() is None for child in watched) and time.monotonic() < deadline:
        time.sleep(0.05)
    ended = {
        rank: child.returncode for rank, child in enumerate(watched, start=1) if child.returncode is not None
    }
    for child in watched:
        if child.poll() is None:
            child.kill()
            child.wait()
    return ended


_BEFORE_THE_OBSERVER_KILLS: list[Callable[[dict[int, int]], None]] = []


@contextlib.contextmanager
def before_the_launcher_kills_this_process(hook: Callable[[dict[int, int]], None]) -> Iterator[None]:
    """Within the block, run `hook` ({local rank: exit code} of the processes Lightning started that ended with an
    error) in this process just before Lightning's launcher kills it for one of them.

    Touch: _ChildProcessObserver._terminate_all of lightning.fabric's subprocess_script launcher (wrapped, once).
    Why: when a process it started ends with an error while rank 0 waits where no collective notices (rank 0 waiting
    for it to join the process group in set-up; an NCCL collective), the observer thread SIGKILLs rank 0 at once:
    exit 137 with nothing said, and a fresh run's folder left claimed, which the same command then refuses.
    Public replacement: none (the observer is started by the launcher, with no hook or setting).
    """
    from lightning.fabric.strategies.launchers import subprocess_script

    observer = subprocess_script._ChildProcessObserver
    if not getattr(observer._terminate_all, "difflab_wrapped", False):
        terminate_all = observer._terminate_all

        def told_first(self: Any) -> None:
            ended = {
                rank: p.returncode for rank, p in enumerate(self._child_processes, start=1) if p.returncode
            }
            for before in list(_BEFORE_THE_OBSERVER_KILLS):
                with contextlib.suppress(Exception):  # the kill must come whatever the hook meets
                    before(ended)
            terminate_all(self)

        told_first.difflab_wrapped = True  # type: ignore[attr-defined]
        observer._terminate_all = told_first
    _BEFORE_THE_OBSERVER_KILLS.append(hook)
    try:
        yield
    finally:
        _BEFORE_THE_OBSERVER_KILLS.remove(hook)


# --- Lightning's ModelCheckpoint --------------------------------------------------------------------------------


def last_saved_step(checkpoint: ModelCheckpoint) -> int:
    """The global step at which `checkpoint` last saved (0 before its first save).

    Touch: ModelCheckpoint._last_global_step_saved (read).
    Why: callbacks.model_checkpoint.Checkpoint writes last.ckpt when training ends between periodic saves, and only then.
    Public replacement: none (`last_model_path` names a file, not the step it holds).
    """
    return checkpoint._last_global_step_saved


def record_saved_step(checkpoint: ModelCheckpoint, step: int) -> None:
    """Tell `checkpoint` that the state at global step `step` is saved, as its own saves do.

    Touch: ModelCheckpoint._last_global_step_saved (written).
    Why: after Checkpoint's own save of last.ckpt, ModelCheckpoint then skips saving that step a second time.
    Public replacement: none.
    """
    checkpoint._last_global_step_saved = step


# --- Lightning's WeightAveraging --------------------------------------------------------------------------------


def averaged_model(callback: WeightAveraging) -> AveragedModel | None:
    """The AveragedModel holding `callback`'s averaged weights (None before fit has set it up).

    Touch: WeightAveraging._average_model.
    Why: training.ema.EMA updates the average itself (one foreach lerp per step, see there) and samples with it.
    Public replacement: none (WeightAveraging exposes no accessor for its average).
    """
    return callback._average_model


def set_averaged_model(callback: WeightAveraging, average: AveragedModel) -> None:
    """Give `callback` the AveragedModel it updates (what WeightAveraging.setup builds).

    Touch: WeightAveraging._average_model (written).
    Why: WeightAveraging.setup calls a module's configure_model before copying it; under trainer=fsdp that shards
    the net and FSDP2 modules cannot be deep-copied, so training.ema.EMA copies the net first and shards the copy
    the same way afterwards.
    Public replacement: none (a WeightAveraging option to copy before configure_model).
    """
    callback._average_model = average


def latest_update_step(callback: WeightAveraging) -> int:
    """The global step at which `callback` last updated its average.

    Touch: WeightAveraging._latest_update_step (read).
    Why: EMA replaces WeightAveraging.on_train_batch_end (to update with its own lerp) and keeps its bookkeeping,
    which WeightAveraging's state_dict saves for resume.
    Public replacement: the `latest_update_step` entry of `callback.state_dict()` for reading; none for writing.
    """
    return callback._latest_update_step


def set_latest_update_step(callback: WeightAveraging, step: int) -> None:
    """Record that `callback` updated its average at global step `step` (see latest_update_step).

    Touch: WeightAveraging._latest_update_step (written).
    """
    callback._latest_update_step = step


def average_on_device(callback: WeightAveraging, device: device) -> None:
    """Have `callback` build its average on `device`, unless a device was given to it.

    Touch: WeightAveraging._device.
    Why: Lightning calls setup before it moves the module to its device, so by default the average would live
    on the CPU and every update of a GPU run would copy the weights across.
    Public replacement: WeightAveraging(device=...) when the device is known where the callback is built; difflab
    builds callbacks from config before the Trainer has chosen one.
    """
    if callback._device is None:
        callback._device = device


# --- W&B through Lightning's WandbLogger ------------------------------------------------------------------------


def wandb_init_arguments(logger: WandbLogger) -> dict[str, Any]:
    """The keyword arguments `logger` will pass to wandb.init (the dict itself: changes reach wandb.init).

    Touch: WandbLogger._wandb_init.
    Why: Lightning always passes `anonymous=None`, which wandb answers with a deprecation warning on every run;
    tracking.wandb_logger.WandbLogger drops it.
    Public replacement: none (a WandbLogger that passes on only the arguments it was given).
    """
    return logger._wandb_init


# --- Hydra's entry point -------------------------------------------------------------------------------------


def run_hydra(task: Callable[[Any], Any], config_dir: str, config_name: str, args: list[str]) -> None:
    """Run `task` as @hydra.main(config_path=config_dir, config_name=config_name, version_base="1.3") runs it,
    with the command line `args` (the arguments after the script).

    Touch: hydra._internal.utils._run_hydra and get_args_parser, the body of hydra.main.
    Why: hydra.main reads sys.argv and nothing else, and a resume adds its run's own overrides to the command
    line (difflab.run.cli); rewriting sys.argv would change what Lightning relaunches for DDP and what the
    process reports about itself.
    Public replacement: none in Hydra 1.3 (hydra.main takes no argument list).
    """
    from hydra import version
    from hydra._internal.utils import _run_hydra, get_args_parser

    version.setbase("1.3")
    parser = get_args_parser()
    _run_hydra(
        args=parser.parse_args(args),
        args_parser=parser,
        task_function=task,
        config_path=config_dir,
        config_name=config_name,
    )


# --- torch.distributed.checkpoint: a sharded checkpoint read as data, in one process ----------------------------


def rebuilding_planner(keys: Iterable[str] | None = None) -> LoadPlanner:
    """A load planner that rebuilds a state dict from a sharded checkpoint's index (the entries `keys` only; all
    when None) and reads every non-tensor entry with torch's weights-only unpickler.

    Touch: torch.distributed.checkpoint.format_utils._EmptyStateDictLoadPlanner (subclassed), and in its
    load_bytes DefaultLoadPlanner's attributes flatten_state_dict, original_state_dict, mappings and state_dict.
    Why: the public planners fill a state dict the caller has built (a model's); reading a checkpoint as data has
    none. And DefaultLoadPlanner.load_bytes unpickles non-tensor entries with weights_only=False: a checkpoint is
    data, never code.
    Public replacement: none (format_utils.dcp_to_torch_save rebuilds the same way, but writes a file and
    unpickles with weights_only=False).
    """
    import torch
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner

    class WeightsOnlyPlanner(_EmptyStateDictLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            # DefaultLoadPlanner.load_bytes with weights_only=True (torch's uses False)
            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_nested(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return WeightsOnlyPlanner(keys=None if keys is None else set(keys))


def load_in_this_process(state: dict[str, Any], reader: StorageReader, planner: LoadPlanner) -> None:
    """Fill `state` from the checkpoint `reader` reads, as `planner` plans it, in this one process (no process
    group, whatever ranks wrote it).

    Touch: torch.distributed.checkpoint.state_dict_loader._load_state_dict(no_dist=True).
    Why: the public dcp.load copies back only the entries the given state dict already has; a state dict rebuilt
    from the index (rebuilding_planner) starts empty, so dcp.load would hand back nothing.
    Public replacement: none (a dcp.load that keeps the entries its planner adds).
    """
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    _load_state_dict(state, storage_reader=reader, planner=planner, no_dist=True)


def set_nested(state: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    """Put `value` into the nested `state` at `path` (a flattened entry's place, as a shard index's planner_data
    names it), making the dicts and lists on the way.

    Touch: torch.distributed.checkpoint._traverse.set_element.
    Why: a shard index flattens nested entries (an optimizer's state) and records each one's path; torch's own
    loader puts them back with this function, and so do rebuilding_planner and reading only the shapes.
    Public replacement: none.
    """
    from torch.distributed.checkpoint._traverse import set_element

    set_element(state, path, value)


# --- torch: Dynamo's recompile limit, the fused lerp ------------------------------------------------------------


def raise_recompile_limit(at_least: int) -> None:
    """Let Dynamo compile one forward at least `at_least` times before it runs the rest eagerly (regional
    compilation shares one forward between blocks of different shapes). Private: `torch._dynamo.config`
    (`recompile_limit`); torch.compiler has no public setter for it yet."""
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, at_least)


def lerp_all_(starts: Iterable[Any], ends: Iterable[Any], weight: float) -> None:
    """starts[i] += weight · (ends[i] − starts[i]) for every pair, in place, in one fused kernel per device and
    dtype (the power-function EMA's update of every weight). Private: `torch._foreach_lerp_`, what torch.optim and
    `get_ema_multi_avg_fn` use; the public replacement is a loop of `Tensor.lerp_`, one kernel per tensor."""
    import torch

    torch._foreach_lerp_(list(starts), list(ends), weight)


# --- torch: DTensor's caches ------------------------------------------------------------------------------------


def clear_dtensor_caches() -> None:
    """Empty the module-level caches of torch's DTensor (no-op where no DTensor was made in this process).

    Touches: torch.distributed.tensor.debug._clear_sharding_prop_cache (the sharding propagator's two caches),
    torch.distributed.tensor._redistribute's `_gen_transform_infos` cache and `clear_redistribute_planner_cache`,
    torch.distributed.tensor._collective_utils.MeshTopoInfo.build_from_mesh's cache.
    Why: each holds the DeviceMesh FSDP2 trained on, and through it the process groups, after
    destroy_process_group; they would be torn down in the interpreter's finalization, where ending gloo's threads
    can abort a finished run (`terminate called without an active exception`, exit -6).
    Public replacement: none; destroy_process_group leaves these caches as they are.
    """
    import sys

    if "torch.distributed.tensor" not in sys.modules:
        return
    from torch.distributed.tensor._collective_utils import MeshTopoInfo
    from torch.distributed.tensor._redistribute import _gen_transform_infos, clear_redistribute_planner_cache
    from torch.distributed.tensor.debug import _clear_sharding_prop_cache

    _clear_sharding_prop_cache()
    _gen_transform_infos.cache_clear()
    clear_redistribute_planner_cache()
    MeshTopoInfo.build_from_mesh.cache_clear()
