"""Read a sharded checkpoint (a folder written by torch.distributed.checkpoint, one shard file per rank, plus
Lightning's meta.pt) in one process, as data: the shards of the entries asked for are put back together in
memory, so sample.py, evaluate.py, export.py and difflab.load read it as they read a one-file checkpoint.

torch.distributed.checkpoint itself unpickles the folder's `.metadata` and any non-tensor entry with plain
pickle; here `.metadata` goes through an unpickler that builds the checkpoint's own record classes only, and
non-tensor entries through torch's weights-only one, so a sharded checkpoint is data, never code, as a file is.
The private parts of torch.distributed.checkpoint this needs are reached through difflab.compat.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..compat import load_in_this_process, rebuilding_planner, set_nested

META_FILE = (
    "meta.pt"  # Lightning's name for everything but weights and optimizer states (its _METADATA_FILENAME)
)
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's index of the shards
OPTIMIZER_PREFIX = "optimizer_"  # Lightning stores optimizer i's state as the entry optimizer_<i>

# The only globals a shard index may name: torch.distributed.checkpoint's record classes and the torch values
# they hold (sizes, dtypes, layouts).
_ALLOWED_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
_ALLOWED_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath")}


def consolidated_name(folder: Path) -> Path:
    """Where `python -m difflab.consolidate` puts a sharded checkpoint together: last.ckpt -> last.full.ckpt."""
    return folder.with_name(f"{folder.stem}.full{folder.suffix or '.ckpt'}")


def is_sharded_checkpoint(path: str | Path) -> bool:
    """True when `path` is a folder holding a torch.distributed.checkpoint index and Lightning's meta.pt."""
    path = Path(path)
    return path.is_dir() and (path / DCP_METADATA).is_file() and (path / META_FILE).is_file()


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = module in _ALLOWED_MODULES or (module, name) in _ALLOWED_GLOBALS
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            allowed = True
        if not allowed:
            raise pickle.UnpicklingError(f"a shard index may not name {module}.{name}")
        return super().find_class(module, name)


def data_only_reader(path: Path) -> Any:
    """A FileSystemReader whose index is read by _IndexUnpickler instead of pickle.load."""
    from torch.distributed.checkpoint import FileSystemReader

    class DataOnlyReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            with (path / DCP_METADATA).open("rb") as file:
                metadata = _IndexUnpickler(file).load()
            metadata.storage_meta = None  # FileSystemReader fills in its own load id
            return metadata

    return DataOnlyReader(path)


def read_shards(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The entries `keys` (all when None) of the sharded checkpoint at `path`, each shard put back into full CPU
    tensors in this process (no process group needed)."""
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    data_only_reader(
        path
    ).read_metadata()  # a refused index raises UnpicklingError here, not wrapped by torch
    state: dict[str, Any] = {}
    try:
        load_in_this_process(state, data_only_reader(path), rebuilding_planner(keys))
    except CheckpointException as error:  # a BaseException: re-raised as what went wrong (a missing shard, …)
        raise rank_errors(error)[0] from error
    return state


def rank_errors(error: BaseException) -> list[BaseException]:
    """The errors inside torch.distributed.checkpoint's CheckpointException (one per failed rank), else [error]."""
    failures = getattr(error, "failures", None) or {}
    found = [f[0] if isinstance(f, tuple) else f for f in failures.values()]
    return [e for e in found if isinstance(e, BaseException)] or [error]


def why_unreadable(error: BaseException) -> str:
    """One line for a sharded checkpoint that could not be read: the first rank's error, not torch's traceback."""
    first = rank_errors(error)[0]
    lines = str(first).strip().splitlines()
    return f"{type(first).__name__}: {lines[0]}" if lines else type(first).__name__


def read_shapes(path: str | Path) -> dict[str, Any]:
    """The entries of the sharded checkpoint at `path` with every tensor on the meta device (its shape and dtype,
    no data read) and every other value (learning rates, step counts) read weights-only."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    index = data_only_reader(Path(path)).read_metadata()
    entries = index.state_dict_metadata
    tensors = {key for key, value in entries.items() if isinstance(value, TensorStorageMetadata)}
    state = (
        read_shards(path, [key for key in entries if key not in tensors])
        if len(tensors) < len(entries)
        else {}
    )
    for key in tensors:
        shape = torch.empty(entries[key].size, dtype=entries[key].properties.dtype, device="meta")
        set_nested(state, index.planner_data[key], shape)
    return state


def read_sharded_checkpoint(path: str | Path, shapes_only: bool = False) -> dict[str, Any]:
    """The checkpoint at `path` as one dict, as torch.load gives a one-file Lightning checkpoint: meta.pt (read
    weights-only) plus every entry's shards put back together (shapes_only: tensors on the meta device, nothing
    read); the entries optimizer_<i> become the list optimizer_states."""
    path = Path(path)
    checkpoint = torch.load(path / META_FILE, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path / META_FILE} is not a Lightning checkpoint's metadata")
    checkpoint.update(read_shapes(path) if shapes_only else read_shards(path))
    optimizers = sorted(k for k in checkpoint if k.startswith(OPTIMIZER_PREFIX))
    if optimizers:
        checkpoint["optimizer_states"] = [
            checkpoint.pop(f"{OPTIMIZER_PREFIX}{i}") for i in range(len(optimizers))
        ]
    return checkpoint
