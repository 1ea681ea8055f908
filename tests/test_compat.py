"""Each private name of Lightning, W&B, Hydra or torch.distributed.checkpoint that difflab touches (all in
difflab.compat) still exists in the installed version and still does what difflab relies on; a failure names the
touch that changed."""

from __future__ import annotations

import contextlib
import inspect
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from difflab import compat

# Lightning's training-epoch loop class, as the Trainer builds it.
EPOCH_LOOP = type(L.Trainer(logger=False, enable_progress_bar=False).fit_loop.epoch_loop)


class Regression(L.LightningModule):
    """The smallest module that trains and logs its loss every step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class StepsLogged(Logger):
    """Records the step of every log_metrics call."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    name, version = "steps", "0"

    def log_metrics(self, metrics, step=None) -> None:
        self.steps.append(step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def fit(tmp_path: Path, steps: int, callbacks: list[L.Callback], logger: Logger | None = None) -> L.Trainer:
    """`steps` optimizer steps of Regression on the CPU, logging every step."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(32, 2), torch.randn(32, 1)), batch_size=2)
    trainer = L.Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=logger or False,
        log_every_n_steps=1,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(Regression(), data)
    return trainer


def require(obj: object, name: str, touch: str) -> None:
    """Fail naming the touch when `obj` has no attribute `name` (before a helper would raise AttributeError)."""
    assert hasattr(obj, name), f"{touch}: {type(obj).__name__}.{name} is gone"


class OnBatchStart(L.Callback):
    """Calls `action(trainer)` before every training batch."""

    def __init__(self, action) -> None:
        self.action = action

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.action(trainer)


class OnBatchEnd(L.Callback):
    """Calls `action(trainer)` after every training batch (before ModelCheckpoint's, which Lightning runs last)."""

    def __init__(self, action) -> None:
        self.action = action

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.action(trainer)


# --- Lightning's training loop ----------------------------------------------------------------------------------


def test_lightning_batches_that_stepped_is_the_step_loggers_get(tmp_path):
    touch = "Lightning TrainingEpochLoop._batches_that_stepped (compat.set_logging_step)"
    require(
        L.Trainer(logger=False, enable_progress_bar=False).fit_loop.epoch_loop, "_batches_that_stepped", touch
    )
    logger = StepsLogged()
    fit(tmp_path, 3, [OnBatchStart(lambda t: compat.set_logging_step(t, 100 + t.global_step))], logger)
    assert logger.steps == [100, 101, 102], f"{touch}: no longer the step Lightning logs at"


def test_lightning_logs_a_steps_metrics_after_its_batch_end_and_compat_can_log_them_first(tmp_path):
    touch = "Lightning _LoggerConnector.update_train_step_metrics (compat.log_step_before_stopping)"

    class StopAtSecondStep(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 2:
                compat.log_step_before_stopping(trainer)
                raise KeyboardInterrupt  # what a stop signal's Preempted does here: the loop ends before logging

    logger = StepsLogged()
    # Lightning ends a KeyboardInterrupt with SystemExit; the rows logged are what counts.
    with contextlib.suppress(SystemExit):
        fit(tmp_path, 5, [StopAtSecondStep()], logger)
    assert logger.steps == [0, 1], f"{touch}: the step that ended at the stop is not logged (or twice)"


def test_lightning_sigterm_broadcast_is_a_method_called_per_batch_that_compat_can_switch_off():
    touch = "Lightning TrainingEpochLoop._broadcast_sigterm_tensor (compat.skip_sigterm_broadcast)"
    method = getattr(EPOCH_LOOP, "_broadcast_sigterm_tensor", None)
    assert callable(method), f"{touch}: the method is gone"
    assert list(inspect.signature(method).parameters) == ["self"], f"{touch}: its signature changed"
    # Looked up on the instance before each batch, so a no-op set on the instance replaces it.
    assert "self._broadcast_sigterm_tensor()" in inspect.getsource(EPOCH_LOOP.advance), (
        f"{touch}: the training loop no longer calls it per batch"
    )
    trainer = L.Trainer(logger=False, enable_progress_bar=False)
    loop = trainer.fit_loop.epoch_loop
    switch_on = compat.skip_sigterm_broadcast(trainer)
    assert switch_on is not None and loop._broadcast_sigterm_tensor() is None
    switch_on()
    assert loop._broadcast_sigterm_tensor.__func__ is method, f"{touch}: not switched back on"


def test_lightning_fit_loop_skip_is_the_property_run_reads_and_compat_overrides_it_only_on_a_resume():
    touch = "Lightning FitLoop.skip (compat.finish_when_resumed_at_the_limit)"
    trainer = L.Trainer(logger=False, enable_progress_bar=False, max_steps=0)
    base = type(trainer.fit_loop)
    assert isinstance(inspect.getattr_static(base, "skip", None), property), f"{touch}: no longer a property"
    assert "if self.skip:" in inspect.getsource(base.run), f"{touch}: run() no longer reads it"
    compat.finish_when_resumed_at_the_limit(trainer)
    loop = trainer.fit_loop
    assert isinstance(loop, base)
    # Done at its start (max_steps=0): skipped in a fresh fit, run through its hooks in a resumed one.
    assert loop.skip
    trainer.ckpt_path = "last.ckpt"
    assert not loop.skip
    # ddp_spawn pickles the Trainer for its processes: before, "Can't pickle local object FinishingFitLoop".
    again = pickle.loads(pickle.dumps(loop))
    assert type(again) is type(loop) and not again.skip


# --- Lightning's DDP launcher -----------------------------------------------------------------------------------


def test_lightning_launcher_procs_are_the_children_its_observer_watches_and_compat_ends_them():
    touch = "Lightning _SubprocessScriptLauncher.procs (compat.end_launched_processes)"
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script

    launcher = subprocess_script._SubprocessScriptLauncher(LightningEnvironment(), 2, 1)
    assert launcher.procs == [], f"{touch}: the launcher keeps its children elsewhere"
    assert "_launch_process_observer(self.procs)" in inspect.getsource(launcher.launch), (
        f"{touch}: the observer no longer watches the same list"
    )
    # The observer kills its "main" process once a child ends with an error: a stand-in here, not pytest.
    main = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(2)"])  # local rank 1 fails first
    waiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # rank 2 waits for it
    launcher.procs.extend([failing, waiting])
    failing.wait()
    observer = fabric_launcher._ChildProcessObserver(main.pid, launcher.procs, sleep_period=0.5)
    observer.start()
    try:
        trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=launcher))
        ended = compat.end_launched_processes(trainer, grace_s=0.2)
        assert ended == {1: 2}, f"{touch}: rank 1 not found failed"
        assert waiting.poll() is not None, f"{touch}: a child still runs"
        observer.join(timeout=5)
        assert not observer.is_alive(), f"{touch}: the observer still watches"
        with contextlib.suppress(subprocess.TimeoutExpired):
            main.wait(timeout=1)  # a kill takes a moment to land
        assert main.poll() is None, f"{touch}: the observer killed the main process"
    finally:
        for process in (main, failing, waiting):
            process.kill()
    assert compat.end_launched_processes(SimpleNamespace(strategy=SimpleNamespace(launcher=None))) == {}


def test_lightning_observer_terminate_all_is_what_kills_rank_0_and_compat_runs_a_hook_first():
    touch = "Lightning _ChildProcessObserver._terminate_all (compat.before_the_launcher_kills_this_process)"
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher

    assert "self._terminate_all()" in inspect.getsource(fabric_launcher._ChildProcessObserver._run), (
        f"{touch}: the observer no longer ends the processes through it"
    )
    main = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for rank 0
    failing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(143)"])
    failing.wait()
    told: list[tuple[dict[int, int], bool]] = []
    try:
        with compat.before_the_launcher_kills_this_process(
            lambda ended: told.append((ended, main.poll() is None))
        ):
            observer = fabric_launcher._ChildProcessObserver(main.pid, [failing], sleep_period=0.1)
            observer.start()
            observer.join(timeout=5)
            main.wait(timeout=5)
        assert told == [({1: 143}, True)], f"{touch}: the hook was not run, or not before the kill"
        assert main.returncode == -signal.SIGKILL, f"{touch}: the main process was not killed after it"
    finally:
        main.kill()


def test_ending_launched_processes_waits_for_the_first_to_end_by_itself_and_names_a_success_too():
    """A rank that closed its connections is ending; on a loaded machine that takes seconds. Rank 0 waits for it
    (not for the one stuck in a collective), and a rank that finished the run (exit 0) is named as ended too."""
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies.launchers import subprocess_script

    launcher = subprocess_script._SubprocessScriptLauncher(LightningEnvironment(), 3, 1)
    finishing = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(1.5)"]
    )  # rank 1: exit 0, late
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # rank 2
    launcher.procs.extend([finishing, stuck])
    try:
        start = time.monotonic()
        ended = compat.end_launched_processes(
            SimpleNamespace(strategy=SimpleNamespace(launcher=launcher)), 30.0
        )
        waited = time.monotonic() - start
        assert ended == {1: 0} and stuck.poll() is not None
        assert waited < 15, (
            f"waited {waited:.1f} s for the stuck process instead of stopping at the first to end"
        )
    finally:
        for process in (finishing, stuck):
            process.kill()


# --- Lightning's ModelCheckpoint --------------------------------------------------------------------------------


def test_lightning_model_checkpoint_last_global_step_saved_is_read_and_respected(tmp_path):
    touch = "Lightning ModelCheckpoint._last_global_step_saved (compat.last_saved_step, record_saved_step)"
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=2, save_top_k=-1
    )
    require(checkpoint, "_last_global_step_saved", touch)
    assert compat.last_saved_step(checkpoint) == 0, f"{touch}: not 0 before the first save"
    # At step 2 the step is recorded as saved before ModelCheckpoint looks: it must skip it, and save step 4.
    record_at_2 = OnBatchEnd(lambda t: t.global_step == 2 and compat.record_saved_step(checkpoint, 2))
    fit(tmp_path, 4, [record_at_2, checkpoint])
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["step=4.ckpt"], f"{touch}: a recorded step is saved again ({saved})"
    assert compat.last_saved_step(checkpoint) == 4, f"{touch}: not the step of the last save"


# --- Lightning's WeightAveraging --------------------------------------------------------------------------------


def test_lightning_weight_averaging_average_model_is_built_at_setup_on_the_chosen_device():
    touch = "Lightning WeightAveraging._average_model, ._device (compat.averaged_model, average_on_device)"
    callback, module = WeightAveraging(), Regression()
    require(callback, "_average_model", touch)
    require(callback, "_device", touch)
    assert compat.averaged_model(callback) is None, f"{touch}: an average before setup"
    compat.average_on_device(callback, torch.device("meta"))
    callback.setup(SimpleNamespace(), module, "fit")
    average = compat.averaged_model(callback)
    assert isinstance(average, AveragedModel), f"{touch}: setup no longer builds the AveragedModel read here"
    assert isinstance(average.module, Regression), (
        f"{touch}: the average no longer wraps a copy of the module"
    )
    assert average.module.layer.weight.device.type == "meta", f"{touch}: the device set here is not used"
    configured = WeightAveraging(device="cpu")
    compat.average_on_device(configured, torch.device("meta"))
    configured.setup(SimpleNamespace(), Regression(), "fit")
    assert compat.averaged_model(configured).module.layer.weight.device.type == "cpu", (
        f"{touch}: overrides a device given to the callback"
    )


def test_lightning_weight_averaging_latest_update_step_is_what_its_checkpoint_state_holds():
    touch = (
        "Lightning WeightAveraging._latest_update_step (compat.latest_update_step, set_latest_update_step)"
    )
    callback = WeightAveraging()
    require(callback, "_latest_update_step", touch)
    assert compat.latest_update_step(callback) == 0, f"{touch}: not 0 before the first update"
    compat.set_latest_update_step(callback, 7)
    assert callback.state_dict() == {"latest_update_step": 7}, f"{touch}: no longer what resume saves"
    restored = WeightAveraging()
    restored.load_state_dict(callback.state_dict())
    assert compat.latest_update_step(restored) == 7, f"{touch}: no longer what resume restores"


# --- W&B through Lightning's WandbLogger ------------------------------------------------------------------------


def test_lightning_wandb_logger_wandb_init_is_what_wandb_init_receives(monkeypatch, tmp_path):
    touch = "Lightning WandbLogger._wandb_init (compat.wandb_init_arguments)"
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from difflab.tracking.wandb_logger import WandbLogger as DifflabWandbLogger

    received: list[dict] = []
    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.setattr(wandb, "init", lambda **kwargs: received.append(kwargs) or SimpleNamespace())
    logger = WandbLogger(project="p", save_dir=str(tmp_path))
    require(logger, "_wandb_init", touch)
    arguments = compat.wandb_init_arguments(logger)
    assert isinstance(arguments, dict) and arguments.get("project") == "p", f"{touch}: not the init arguments"
    arguments["tags"] = ["added"]
    _ = logger.experiment  # what calls wandb.init
    assert received == [arguments], f"{touch}: not what the logger passes to wandb.init"
    _ = DifflabWandbLogger(project="p", save_dir=str(tmp_path)).experiment
    assert "anonymous" not in received[1] and received[1]["project"] == "p", f"{touch}: anonymous not dropped"


# --- W&B's offline run file, read by the tests only -------------------------------------------------------------


def test_wandb_offline_run_file_is_still_readable_by_the_tests_reader(tmp_path):
    touch = (
        "W&B's .wandb offline run file format (tests/wandb_files.py, which tests use to see what reached W&B)"
    )
    import wandb
    from wandb_files import history_rows, wandb_records

    run = wandb.init(mode="offline", dir=str(tmp_path), project="p", name="named", group="grouped")
    run.log({"train/loss": 0.5, "trainer/global_step": 3})
    run.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    try:
        records = wandb_records(run_dir)
        rows = history_rows(run_dir)
    except Exception as error:  # a changed framing or protobuf fails inside the parser
        raise AssertionError(f"{touch}: cannot be parsed ({error!r})") from error
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert [(r.display_name, r.run_group) for r in runs] == [("named", "grouped")], f"{touch}: no run record"
    assert [row["train/loss"] for row in rows] == [0.5], f"{touch}: no history row"


def test_hydra_run_hydra_is_hydra_mains_body_with_an_argument_list():
    """compat.run_hydra calls hydra._internal.utils._run_hydra with get_args_parser's parse of a given list."""
    import inspect

    from hydra._internal import utils

    params = set(inspect.signature(utils._run_hydra).parameters)
    assert {"args", "args_parser", "task_function", "config_path", "config_name"} <= params, "_run_hydra"
    args = utils.get_args_parser().parse_args(["-m", "seed=1,2"])
    assert args.multirun and args.overrides == ["seed=1,2"], "get_args_parser"


# --- torch.distributed.checkpoint ------------------------------------------------------------------------------


class _Pickled:
    """A Python object, which a checkpoint read as data must refuse."""


def saved_shards(folder: Path, extra: dict | None = None) -> dict:
    """A folder written through torch.distributed.checkpoint by this one process: a tensor entry and an
    optimizer-like entry whose nested values (a step tensor, param groups) the index flattens."""
    import torch.distributed.checkpoint as dcp

    state = {
        "weights": {"w": torch.arange(6.0).reshape(2, 3)},
        "optimizer_0": {
            "state": {0: {"step": torch.tensor(3.0)}},
            "param_groups": [{"lr": 0.1, "params": [0]}],
        },
        **(extra or {}),
    }
    dcp.save(state, checkpoint_id=folder, no_dist=True)
    return state


def read_back(folder: Path, keys=None) -> dict:
    from torch.distributed.checkpoint import FileSystemReader

    state: dict = {}
    compat.load_in_this_process(state, FileSystemReader(folder), compat.rebuilding_planner(keys))
    return state


def test_torch_dcp_load_state_dict_and_the_rebuilding_planner_read_a_checkpoint_in_one_process(tmp_path):
    touch = (
        "torch.distributed.checkpoint state_dict_loader._load_state_dict(no_dist=True), "
        "format_utils._EmptyStateDictLoadPlanner (compat.load_in_this_process, rebuilding_planner)"
    )
    from torch.distributed.checkpoint import format_utils, state_dict_loader

    require(state_dict_loader, "_load_state_dict", touch)
    require(format_utils, "_EmptyStateDictLoadPlanner", touch)
    params = set(inspect.signature(state_dict_loader._load_state_dict).parameters)
    assert {"state_dict", "storage_reader", "planner", "no_dist"} <= params, f"{touch}: its signature changed"
    saved = saved_shards(tmp_path / "ckpt")
    state = read_back(tmp_path / "ckpt")
    assert state.keys() == saved.keys(), f"{touch}: the entries are not rebuilt from the index"
    torch.testing.assert_close(state["weights"]["w"], saved["weights"]["w"], rtol=0, atol=0)
    assert state["optimizer_0"]["param_groups"] == saved["optimizer_0"]["param_groups"], (
        f"{touch}: a flattened non-tensor entry is not put back in its place"
    )
    # The index names a nested entry by its path; an int dict key comes back as its text (as Lightning's did).
    assert float(state["optimizer_0"]["state"]["0"]["step"]) == 3.0, f"{touch}: a nested tensor is lost"
    assert read_back(tmp_path / "ckpt", keys=["weights"]).keys() == {"weights"}, (
        f"{touch}: the planner no longer reads only the entries asked for"
    )


def test_torch_dcp_non_tensor_entries_are_read_weights_only(tmp_path):
    touch = "torch.distributed.checkpoint DefaultLoadPlanner.load_bytes (compat.rebuilding_planner)"
    from torch.distributed.checkpoint.api import CheckpointException

    saved_shards(tmp_path / "ckpt", extra={"code": _Pickled()})
    assert "code" not in read_back(tmp_path / "ckpt", keys=["weights"]), (
        f"{touch}: reads entries not asked for"
    )
    try:
        read_back(tmp_path / "ckpt")
    except CheckpointException as error:  # torch wraps each rank's error
        assert "weights_only" in str(error) or "Unsupported global" in str(error), f"{touch}: {error}"
    else:
        raise AssertionError(f"{touch}: a pickled Python object was unpickled (no longer weights-only)")


def test_torch_dcp_traverse_set_element_puts_a_flattened_entry_back_in_its_place(tmp_path):
    touch = "torch.distributed.checkpoint._traverse.set_element (compat.set_nested)"
    from torch.distributed.checkpoint import FileSystemReader, _traverse

    require(_traverse, "set_element", touch)
    saved = saved_shards(tmp_path / "ckpt")
    index = FileSystemReader(tmp_path / "ckpt").read_metadata()
    rebuilt: dict = {}
    for key, path in index.planner_data.items():
        compat.set_nested(rebuilt, path, key)
    groups = [{"lr": "optimizer_0.param_groups.0.lr", "params": "optimizer_0.param_groups.0.params"}]
    assert rebuilt["optimizer_0"]["param_groups"] == groups, f"{touch}: a list on the path is not made"
    assert rebuilt["optimizer_0"]["state"]["0"]["step"] == "optimizer_0.state.0.step", (
        f"{touch}: not at its path"
    )
    assert rebuilt.keys() == saved.keys(), f"{touch}: the nesting is not the saved one"


def test_no_module_but_compat_imports_a_private_name_of_a_library():
    """A private module or name of another package is imported, or reached as an attribute of torch
    (torch._dynamo, torch._foreach_lerp_), in difflab/compat.py only."""
    import ast

    from conftest import ROOT

    found = []
    for path in sorted((ROOT / "src" / "difflab").rglob("*.py")):
        if path.name == "compat.py" and path.parent.name == "difflab":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                modules, names = [node.module], [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                modules, names = [a.name for a in node.names], []
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "torch"
                and node.attr.startswith("_")
            ):
                modules, names = ["torch"], [node.attr]
            else:
                continue
            parts = [p for m in modules for p in m.split(".")] + names
            if any(p.startswith("_") for p in parts):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"private imports outside difflab/compat.py: {', '.join(found)}"


def test_torch_dynamo_recompile_limit_is_a_config_value_compat_raises_and_never_lowers():
    import torch._dynamo

    from difflab.compat import raise_recompile_limit

    touch = "torch._dynamo.config.recompile_limit"
    before = torch._dynamo.config.recompile_limit
    assert isinstance(before, int), f"{touch}: no longer an int"
    try:
        raise_recompile_limit(before + 5)
        assert torch._dynamo.config.recompile_limit == before + 5, f"{touch}: not raised"
        raise_recompile_limit(1)
        assert torch._dynamo.config.recompile_limit == before + 5, f"{touch}: lowered"
    finally:
        torch._dynamo.config.recompile_limit = before


def test_torch_foreach_lerp_moves_every_tensor_as_tensor_lerp_does():
    from difflab.compat import lerp_all_

    gen = torch.Generator().manual_seed(0)
    starts = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen, dtype=torch.float64)]
    ends = [torch.randn_like(t) for t in starts]
    expected = [s.clone().lerp_(e, 0.3) for s, e in zip(starts, ends, strict=True)]
    lerp_all_(starts, ends, 0.3)
    for got, want in zip(starts, expected, strict=True):
        torch.testing.assert_close(got, want, msg="torch._foreach_lerp_: not Tensor.lerp_ in place")


def test_torch_dtensor_caches_that_hold_a_device_mesh_are_the_ones_compat_empties():
    """Each cache difflab.compat.clear_dtensor_caches empties still exists (tests/training/test_process_groups_end.py
    checks that emptying them frees the mesh FSDP2 trained on)."""
    import torch.distributed.tensor.debug as debug
    from torch.distributed.tensor import _collective_utils, _redistribute

    from difflab.compat import clear_dtensor_caches

    touches = {
        "torch.distributed.tensor.debug._clear_sharding_prop_cache": debug,
        "torch.distributed.tensor._redistribute._gen_transform_infos": _redistribute,
        "torch.distributed.tensor._redistribute.clear_redistribute_planner_cache": _redistribute,
    }
    for touch, module in touches.items():
        assert callable(getattr(module, touch.rsplit(".", 1)[1], None)), f"{touch}: gone"
    assert callable(getattr(_redistribute._gen_transform_infos, "cache_clear", None)), (
        "torch.distributed.tensor._redistribute._gen_transform_infos: no longer a functools cache"
    )
    build = getattr(getattr(_collective_utils, "MeshTopoInfo", None), "build_from_mesh", None)
    assert callable(getattr(build, "cache_clear", None)), (
        "torch.distributed.tensor._collective_utils.MeshTopoInfo.build_from_mesh: gone or no longer cached"
    )
    clear_dtensor_caches()
    assert _redistribute._gen_transform_infos.cache_info().currsize == 0
