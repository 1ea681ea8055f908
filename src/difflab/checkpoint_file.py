"""A checkpoint read as data: the dict as stored (weights-only unpickler, or a sharded folder put back together),
its config brought up to date and held to the allowlist, the denoiser's weights in it, a run folder's last.ckpt,
and a model as it lies on disk (checkpoint or model folder) read in one pass. Nothing is built here
(difflab.checkpoint builds models; the autoencoder loader reads through here too)."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint_config import check_stored_targets
from .checkpoint_upgrade import upgraded
from .io.diffusers_kinds import what_file_is
from .io.sharded_checkpoint import DCP_METADATA, META_FILE, is_sharded_checkpoint, why_unreadable
from .io.stored_checkpoint import NotACheckpoint, load_stored, torch_load_reason
from .model_folder.hub import fetch_hub_pipeline, is_hub_id
from .model_folder.read_diffusers_pipeline import (
    check_pipeline_configs,
    is_diffusers_pipeline,
    read_diffusers_pipeline,
)
from .model_folder.safetensors_folder import FOLDER_CONFIG, FOLDER_WEIGHTS, read_model_folder

CONFIG_KEY = "difflab_config"
# Where Lightning stores a latent run's datamodule state (its latent space): under the datamodule's class name.
LATENT_RECORD_KEY = "LatentDataModule"


@dataclass(frozen=True)
class ModelOnDisk:
    """A model as stored, read once: where it lies (a checkpoint or a model folder), its config brought up to date
    and held to the allowlist, the network's weights, which weights they are, its step, and a latent diffusion
    checkpoint's record of its latent space (None for any other)."""

    kind: str  # "checkpoint", "model folder" or "diffusers folder"
    path: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    weights: str  # "ema", "raw" or a post-hoc EMA's own name
    step: int
    latent_record: Mapping[str, Any] | None = None

    @property
    def where(self) -> str:
        """How errors name it: "checkpoint <path>" or "model folder <path>"."""
        return f"{self.kind} {self.path}"


def read_model(path: str | Path, allowed_targets: Iterable[str] = ()) -> ModelOnDisk:
    """The model at `path` read in one pass: a .ckpt written by train.py (a file, or a folder of shards), a train.py
    run folder (its checkpoints/last.ckpt), a folder written by `export.py format=safetensors`, or a diffusers
    pipeline folder of difflab's U-Net or DiT (`export.py format=diffusers`, google/ddpm-*), here or a Hugging Face
    Hub model id."""
    if is_hub_id(path):  # e.g. google/ddpm-cifar10-32, fetched into the Hub's cache
        path = fetch_hub_pipeline(str(path), check_pipeline_configs)
    path = Path(run_checkpoint(path))
    if is_diffusers_pipeline(path):
        kind, (config, state, weights, step), record = "diffusers folder", read_diffusers_pipeline(path), None
    elif is_model_folder(path):
        kind, (config, state, weights, step), record = "model folder", read_model_folder(path), None
    else:
        check_whole(path)
        check_checksums(path)
        ckpt = read_checkpoint_file(path)
        kind, config, state = "checkpoint", ckpt[CONFIG_KEY], network_state(ckpt) or {}
        # WeightAveraging stores the averaged weights as state_dict and the raw ones beside them. A post-hoc EMA
        # reconstruction (python -m difflab.phema) names its own ("post-hoc EMA sigma_rel=0.050").
        weights = str(ckpt.get("weights") or ("ema" if "current_model_state" in ckpt else "raw"))
        step, record = int(ckpt.get("global_step", 0)), ckpt.get(LATENT_RECORD_KEY)
    config = upgraded(config)  # an older checkpoint's or export's config, brought up to date
    check_stored_targets(config, allowed_targets, f"{kind} {path}")
    return ModelOnDisk(kind, path, config, state, weights, step, record)


def check_whole(path: Path) -> None:
    """Refuse one file of a model folder or of a sharded checkpoint given where the folder is meant (before, a
    shard was read as a checkpoint file and called damaged)."""
    if not path.is_file():
        return
    if is_model_folder_file(path):
        raise ValueError(f"{path} is one file of the model folder {path.parent}: pass the folder itself")
    if is_sharded_checkpoint(path.parent):
        raise ValueError(
            f"{path} is one file of the sharded checkpoint {path.parent}: pass the folder itself"
        )
    # Before, "not a Lightning checkpoint" or "not a PyTorch checkpoint file".
    diffusers_file = what_file_is(path)
    if diffusers_file:
        raise ValueError(diffusers_file)


def check_checksums(path: Path) -> None:
    """Refuse a checkpoint file whose bytes changed since torch wrote it (each entry of its zip archive against
    the CRC-32 torch recorded): torch.load does not check them, so before, bytes overwritten in the middle of a
    file (a bad disk, a copy gone wrong) were loaded and trained over (an optimizer state of 3.4e38), or sampled
    from. One read of the file, before the work it would spoil."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return  # a sharded checkpoint's folder, or a legacy pickle: nothing recorded to check against
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"could not read checkpoint {path}: the file is damaged ({error})") from error
    if bad is not None:
        raise ValueError(f"could not read checkpoint {path}: the file is damaged ({bad} fails its checksum)")


def read_checkpoint(
    path: str | Path, mmap: bool = False, allowed_targets: Iterable[str] = ()
) -> dict[str, Any]:
    """The checkpoint dict on the CPU, its stored config brought up to date and held to the allowlist: one-line
    errors for a missing, corrupt, foreign or code-carrying file, or a target outside the allowlist.
    mmap=True maps the tensors (cheap when only the config is needed)."""
    ckpt = read_checkpoint_file(path, mmap)
    ckpt[CONFIG_KEY] = upgraded(ckpt[CONFIG_KEY])
    check_stored_targets(ckpt[CONFIG_KEY], allowed_targets, f"checkpoint {Path(path)}")
    return ckpt


def read_checkpoint_file(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict as stored, read with a weights-only unpickler (nothing is run, nothing is built yet);
    one-line errors for a missing, corrupt, foreign or code-carrying file."""
    path = Path(path)
    check_whole(path)
    try:
        ckpt = load_stored(path, mmap)
    except NotACheckpoint:
        raise
    except pickle.UnpicklingError as error:
        # The weights-only unpickler met a Python object (a class, a function call): never run it.
        detail = str(error).strip().splitlines()
        found = next((line.strip() for line in detail if "GLOBAL" in line or "Unsupported" in line), "")
        if "GLOBAL" not in found and not _looks_like_torch_file(path):
            # A text file starting with { or [ (a JSON, a log) trips the unpickler too: say what it is.
            raise ValueError(f"could not read checkpoint {path}: {_NOT_A_TORCH_FILE}") from error
        raise ValueError(
            f"refused checkpoint {path}: it holds Python objects, not only tensors and plain data"
            f"{f' ({found})' if found else ''}; difflab reads checkpoints weights-only and never runs their code"
        ) from error
    except Exception as error:  # torch raises several types for truncated or non-checkpoint files
        if path.is_dir():
            raise ValueError(f"could not read sharded checkpoint {path}: {why_unreadable(error)}") from error
        raise ValueError(
            f"could not read checkpoint {path}: {why_torch_file_unreadable(path, error)}"
        ) from error
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    if not isinstance(ckpt.get(CONFIG_KEY), dict):
        raise ValueError(f"{path} has no stored difflab config; was it written by difflab's train.py?")
    return ckpt


def stored_step(path: str | Path) -> int | None:
    """The global step a checkpoint was saved at (tensors memory-mapped, nothing built); None when unreadable."""
    try:
        return int(load_stored(Path(path), mmap=True)["global_step"])
    except Exception:
        return None


def why_torch_file_unreadable(path: Path, error: Exception) -> str:
    """What a file torch could not load is: a damaged PyTorch file, or no PyTorch file at all (a text file,
    an image) where torch's own message (`KeyError: 101`) would say nothing."""
    foreign = _other_archive(path)
    if foreign:
        return foreign
    if _looks_like_torch_file(path):
        return f"the file is damaged or cut short ({torch_load_reason(error)})"
    return _NOT_A_TORCH_FILE


def _other_archive(path: Path) -> str | None:
    """What a whole zip archive that torch did not write is (torch's hold a <name>/data.pkl): a NumPy .npz, as
    sample.py's samples.npz and the metrics' statistics are, was called "damaged or cut short"."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None  # not a whole zip archive: a torch file cut short, or no archive at all
    if any(name.endswith("data.pkl") for name in names):
        return None
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    if names and all(name.endswith(".npy") for name in names):
        return (
            f"it is a NumPy .npz archive ({shown}), not a PyTorch checkpoint; a set of images such as sample.py's "
            "samples.npz is scored with evaluate.py images=<it>"
        )
    return f"it is a zip archive of other files ({shown}), not a PyTorch checkpoint"


_NOT_A_TORCH_FILE = "it is not a PyTorch checkpoint file (neither a zip archive nor a pickle)"


def _looks_like_torch_file(path: Path) -> bool:
    """Whether the file starts as torch.save writes: a zip archive, or a (legacy) pickle of protocol 2 or more."""
    if path.is_dir():
        return True  # a sharded checkpoint folder: its own errors name what is wrong
    with path.open("rb") as file:
        head = file.read(4)
    return head.startswith(b"PK") or head[:1] == b"\x80"


def network_state(ckpt: Mapping[str, Any], key: str = "state_dict") -> dict[str, torch.Tensor] | None:
    """The denoiser's weights under ckpt[key] without the `net.` prefix; None when the key is absent.

    "state_dict" holds the EMA weights when the run had EMA; "current_model_state" the raw ones beside them.
    """
    state = ckpt.get(key)
    if not isinstance(state, Mapping):
        return None
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def run_checkpoint(path: str | Path) -> str | Path:
    """A train.py run folder's checkpoints/last.ckpt; any other path as given."""
    last = Path(path) / "checkpoints" / "last.ckpt"
    is_checkpoint = last.is_file() or is_sharded_checkpoint(last)
    return last if not (Path(path) / FOLDER_CONFIG).exists() and is_checkpoint else path


def checkpoint_run_folder(path: str | Path) -> Path | None:
    """The train.py run folder a checkpoint belongs to: <run> for <run>/checkpoints/<file> and for <run> itself
    (its last.ckpt); None for a checkpoint kept anywhere else."""
    checkpoint = Path(run_checkpoint(path))
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def is_model_folder_file(path: Path) -> bool:
    """The weights or the config of a model folder (both beside each other), given where the folder is meant."""
    folder = path.parent
    return path.name in (FOLDER_CONFIG, FOLDER_WEIGHTS) and all(
        (folder / name).is_file() for name in (FOLDER_CONFIG, FOLDER_WEIGHTS)
    )


def is_model_folder(path: Path) -> bool:
    """A folder with neither file of a sharded checkpoint: read as a model folder (whose reader says what it
    lacks); one with either is a sharded checkpoint, whole or not (its reader says which file is missing)."""
    return path.is_dir() and not any((path / name).is_file() for name in (DCP_METADATA, META_FILE))
