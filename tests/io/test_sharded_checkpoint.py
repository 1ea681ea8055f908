"""Sharded checkpoints (trainer.strategy.state_dict_type=sharded) read in one process: a folder of
torch.distributed.checkpoint shards written here by this one process stands for one written by the ranks."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from difflab.checkpoint import load_model, read_checkpoint
from difflab.cluster.stop_signal import StoppedBySignal
from difflab.consolidate import consolidate, main
from difflab.training.atomic_checkpoint_io import newest_checkpoint, remove_unfinished_writes
from difflab.training.sharded_checkpoint import publish, temp_name


def as_sharded(file: Path, folder: Path) -> Path:
    """`file` (a train.py checkpoint) rewritten as the folder a sharded save writes: weights, EMA and optimizer
    state through torch.distributed.checkpoint, everything else in meta.pt."""
    ckpt = torch.load(file, map_location="cpu", weights_only=True)
    state = {key: ckpt.pop(key) for key in ("state_dict", "current_model_state")}
    state["optimizer_0"] = ckpt.pop("optimizer_states")[0]
    dcp.save(state, checkpoint_id=folder)  # no process group: this process writes every shard
    torch.save(ckpt, folder / "meta.pt")
    return folder


@pytest.fixture
def sharded(tiny_ckpt: Path, tmp_path: Path) -> Path:
    return as_sharded(tiny_ckpt, tmp_path / "run" / "checkpoints" / "last.ckpt")


def assert_same_net(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], rtol=0, atol=0, msg=key)


def test_a_sharded_checkpoint_loads_as_its_one_file_version_does(tiny_ckpt: Path, sharded: Path) -> None:
    from_file, from_folder = load_model(tiny_ckpt), load_model(sharded.parent.parent)  # a run folder finds it
    assert (
        (from_folder.weights, from_folder.global_step)
        == (from_file.weights, from_file.global_step)
        == ("ema", 2)
    )
    assert_same_net(from_file.net, from_folder.net)
    ckpt, original = read_checkpoint(sharded), torch.load(tiny_ckpt, weights_only=True)
    for key in ("state_dict", "current_model_state"):
        for name, value in original[key].items():
            torch.testing.assert_close(ckpt[key][name], value, rtol=0, atol=0)
    assert len(ckpt["optimizer_states"]) == 1 and ckpt["optimizer_states"][0]["state"]


def test_reading_only_the_config_reads_no_tensor_data(sharded: Path) -> None:
    ckpt = read_checkpoint(sharded, mmap=True)
    weights = ckpt["state_dict"]
    assert weights and all(t.device.type == "meta" for t in weights.values())
    assert ckpt["global_step"] == 2 and ckpt["optimizer_states"][0]["param_groups"][0]["lr"] > 0


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_shard_index_that_would_run_code_is_refused_and_not_run(sharded: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (sharded / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(ValueError, match="refused checkpoint .*Python objects") as error:
        load_model(sharded)
    assert "\n" not in str(error.value) and not marker.exists()


def test_a_missing_shard_is_one_line(sharded: Path) -> None:
    (shard,) = sharded.glob("*.distcp")
    shard.unlink()
    with pytest.raises(ValueError, match=f"could not read sharded checkpoint {sharded}") as error:
        load_model(sharded)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("lost", ["meta.pt", ".metadata"])
def test_a_sharded_checkpoint_without_its_index_or_metadata_says_which_file_is_missing(
    sharded: Path, lost: str
) -> None:
    (sharded / lost).unlink()
    with pytest.raises(
        FileNotFoundError, match=f"{sharded} is not a whole sharded checkpoint: it has no {lost}$"
    ):
        load_model(sharded)


def test_publish_replaces_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    for previous_is_a_folder in (True, False):
        target = tmp_path / f"{previous_is_a_folder}" / "last.ckpt"
        target.parent.mkdir()
        if previous_is_a_folder:
            target.mkdir()
            (target / "__0_0.distcp").write_text("old")
        else:
            target.write_text("old one-file checkpoint")
        temp = temp_name(target)
        temp.mkdir()
        (temp / "meta.pt").write_text("new")
        publish(temp, target)
        assert sorted(p.name for p in target.iterdir()) == ["meta.pt"]
        assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temp or old copy left


def test_an_unfinished_sharded_write_is_removed_and_the_newest_folder_is_the_last_good_one(
    sharded: Path,
) -> None:
    folder = sharded.parent
    unfinished = temp_name(folder / "step_0000004.ckpt")
    unfinished.mkdir()
    (unfinished / "__0_0.distcp").write_text("half")
    assert remove_unfinished_writes(folder) == [unfinished] and not unfinished.exists()
    assert newest_checkpoint(folder) == sharded


def test_consolidate_writes_one_file_that_loads_the_same_and_never_overwrites(sharded: Path) -> None:
    written = consolidate(sharded)
    assert written == sharded.with_name("last.full.ckpt") and written.is_file()
    assert_same_net(load_model(sharded).net, load_model(written).net)
    before = written.read_bytes()
    with pytest.raises(FileExistsError, match="last.full.ckpt exists"):
        consolidate(sharded)
    assert written.read_bytes() == before


def test_consolidate_command_refuses_a_file_in_one_line(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = shutil.copy(tiny_ckpt, tmp_path / "last.ckpt")
    assert main([str(copy)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "is not a sharded checkpoint" in line and str(copy) in line
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_consolidate_stopped_while_writing_is_one_line_and_leaves_no_partial_file(
    sharded: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cluster's SIGTERM during the (long) write of a large model: before, no word at all (exit -15).
    def stopped(*args, **kwargs):
        raise StoppedBySignal(15)

    before = sorted(p.name for p in sharded.parent.iterdir())
    monkeypatch.setattr(torch, "save", stopped)
    with pytest.raises(SystemExit) as ended:
        main([str(sharded)])
    assert ended.value.code == 143
    assert capsys.readouterr().err.splitlines() == [
        "error: python -m difflab.consolidate stopped by SIGTERM; nothing was written (what it had written was "
        "removed)"
    ]
    assert sorted(p.name for p in sharded.parent.iterdir()) == before


class _OneProcessStrategy:
    """What save_sharded asks of Lightning's strategy, for a world of one process."""

    is_global_zero = True
    root_device = torch.device("cpu")

    def broadcast(self, value):
        return value

    def reduce(self, tensor, reduce_op):
        return tensor

    def barrier(self, name=None):
        pass


def test_a_full_disk_during_a_sharded_save_keeps_the_previous_checkpoint(
    sharded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from difflab.io.atomic import NoSpaceLeft
    from difflab.training.sharded_checkpoint import save_sharded

    before = {p.name: p.read_bytes() for p in sharded.iterdir()}

    def checkpoint() -> dict:
        return {"state_dict": {"w": torch.ones(3)}, "optimizer_states": [], "global_step": 7}

    def disk_full(fd: int) -> None:  # the shard's bytes reach the disk at fsync: where a full disk shows
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(NoSpaceLeft, match="no space left on device writing .*last.ckpt"):
        save_sharded(_OneProcessStrategy(), checkpoint(), sharded)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in sharded.iterdir()} == before  # the previous checkpoint, whole
    assert [p.name for p in sharded.parent.iterdir()] == ["last.ckpt"]  # and no half-written folder beside it
    save_sharded(_OneProcessStrategy(), checkpoint(), sharded)  # with room again, the same save publishes it
    assert torch.load(sharded / "meta.pt", weights_only=True)["global_step"] == 7
    restored = {"state_dict": {"w": torch.zeros(3)}}
    dcp.load(restored, checkpoint_id=sharded)
    assert torch.equal(restored["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in sharded.iterdir()) == [".metadata", "__0_0.distcp", "meta.pt"]


def test_a_full_save_over_a_sharded_checkpoint_keeps_it_until_the_file_is_whole(
    sharded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sharded run resumed with state_dict_type=full writes last.ckpt as a file where the folder was: a full
    disk during that write keeps the folder; with room, the file replaces it."""
    import errno

    from difflab.io.atomic import NoSpaceLeft
    from difflab.training.atomic_checkpoint_io import AtomicCheckpointIO
    from difflab.training.sharding import ShardedStrategy

    strategy = ShardedStrategy(state_dict_type="full")  # no process group: a world of one process
    strategy.checkpoint_io = AtomicCheckpointIO()  # what train() installs
    before = {p.name: p.read_bytes() for p in sharded.iterdir()}

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(NoSpaceLeft):
        strategy.save_checkpoint({"global_step": 7}, sharded)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in sharded.iterdir()} == before
    assert [p.name for p in sharded.parent.iterdir()] == ["last.ckpt"]
    strategy.save_checkpoint({"global_step": 7}, sharded)
    assert sharded.is_file() and torch.load(sharded, weights_only=True) == {"global_step": 7}
    assert [p.name for p in sharded.parent.iterdir()] == ["last.ckpt"]
