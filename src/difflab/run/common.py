"""What the entry functions share: checking values, devices and threads, samplers from a checkpoint, the
output folder and the files written into it (never overwriting, never leaving a half-made folder behind)."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ..diffusion.auto_batch import AUTO
from ..io.atomic import NoSpaceLeft, atomic_write_text
from ..text import DEFAULT_ENCODER, encoder_dim, encoder_version
from .errors import SweepConfigError

log = logging.getLogger("difflab")

# --- devices, threads, objects built from configs ------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_cpu_threads(cpu_threads: int | str | None) -> None:
    """cpu_threads=N sets torch's intra-op threads (null or auto leave them: see set_generation_threads)."""
    if cpu_threads not in (None, AUTO):
        torch.set_num_threads(int(cpu_threads))


def instantiate_entries(cfg: DictConfig | None) -> list[Any]:
    """One object per entry of a dict-of-entries config (callbacks, loggers) that has a `_target_`; entries set
    to null are switched off (lightning-hydra-template style)."""
    if not cfg:
        return []
    return [
        instantiate(entry) for entry in cfg.values() if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def resolve_conditioning(cfg: DictConfig) -> None:
    """Make the data and the model agree on the conditioning before anything is built or compared:
    model.num_classes=K alone makes the data serve labels; data.condition=labels alone takes K from the data;
    data.condition=superres sets model.cond_channels (model.cond_channels alone makes the data serve superres).
    data.condition=text (or data.captions alone) builds a text-to-image net of the encoder's width, and records
    the encoder's name and installed version (never its weights) in the config."""
    data, model = cfg.data, cfg.model
    with open_dict(data), open_dict(model):
        if model.get("num_classes") and data.get("condition") is None:
            data.condition = "labels"
        if model.get("cond_channels") and data.get("condition") is None:
            data.condition = "superres"
        if (model.get("text_dim") or data.get("captions")) and data.get("condition") is None:
            data.condition = "text"
        if data.get("condition") == "text":
            resolve_text(data, model)
        if data.get("condition") == "labels":
            found = instantiate(data).num_classes
            if not model.get("num_classes"):
                model.num_classes = found
            elif int(model.num_classes) != int(found):
                raise ValueError(
                    f"model.num_classes={model.num_classes} but data={data.dataset} has {found} classes; "
                    f"drop model.num_classes (it is taken from the data) or use model.num_classes={found}"
                )
        if data.get("condition") == "superres":
            _resolve_superres(data, model)


def _resolve_superres(data: DictConfig, model: DictConfig) -> None:
    """SR3: the U-Net takes the low-res image (data.channels of them) beside x_t; it is never dropped, so
    classes do not combine with it."""
    if model.get("num_classes"):
        raise ValueError(
            "model.num_classes with data.condition=superres: class-conditional super-resolution is not supported"
        )
    channels = int(data.channels)
    if not model.get("cond_channels"):
        model.cond_channels = channels
    elif int(model.cond_channels) != channels:
        raise ValueError(
            f"model.cond_channels={model.cond_channels} but data.channels={channels}: the low-res input has "
            f"the images' channels; drop model.cond_channels (it is taken from the data)"
        )


def resolve_text(data: DictConfig, model: DictConfig) -> None:
    """A text-to-image run: the encoder's name and version go into data, its width into model.text_dim."""
    if model.get("num_classes"):
        raise ValueError("data.condition=text and model.num_classes cannot be combined: pick labels or text")
    encoder = data.get("text_encoder") or DEFAULT_ENCODER
    data.text_encoder = encoder
    if not data.get("text_encoder_version"):
        data.text_encoder_version = encoder_version(encoder)
    width = encoder_dim(encoder)
    if not model.get("text_dim"):
        model.text_dim = width
    elif int(model.text_dim) != width:
        raise ValueError(
            f"model.text_dim={model.text_dim} but the text encoder {encoder} gives {width}-d states; "
            "drop model.text_dim (it is taken from the encoder)"
        )


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, with the Hydra group choices (model=…, data=…) recorded beside it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("module", None)  # it only points at model, schedule, optim, …: stored once, under their names
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        config["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return config


def optimized_metric(cfg: DictConfig, metrics: Mapping[str, float]) -> float | None:
    """The value a hyperparameter sweeper minimises: cfg.optimized_metric (e.g. val/loss) among a run's final
    metrics; None when unset."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        logged = ", ".join(sorted(metrics)) or "none"
        raise SweepConfigError(
            f"optimized_metric={name} was not logged by this run; logged metrics: {logged}"
        )
    return float(metrics[name])


# --- where results go -----------------------------------------------------------------------------------------


def _make_folder(path: Path, exist_ok: bool) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as error:
        raise ValueError(f"cannot create the output folder {path}: {error.strerror or error}") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into the output folder {path}: permission denied")


def _new_dated_folder(task: str, root: Path) -> Path:
    """<root>/outputs/<task>/<date>/<time>, made in one exclusive step (_2, _3, … when another run took it)."""
    base = root / "outputs" / task / datetime.now().strftime("%Y-%m-%d") / datetime.now().strftime("%H-%M-%S")
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            _make_folder(candidate, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise ValueError(f"could not find a free output folder next to {base}")


@contextlib.contextmanager
def output_folder(out: str | Path | None, task: str, root: str | Path | None = None) -> Iterator[Path]:
    """The folder results go to: out= (new or empty; a non-empty one is never written into), else a new
    <root>/outputs/<task>/<date>/<time> (root: the project folder, paths.root_dir; default the current one). Checked writable before any work; removed again if the work fails before
    anything was written into it."""
    if out:
        folder = Path(out)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(
                f"output folder {folder} already exists and is not empty; choose another out="
            )
        created = not folder.exists()
        _make_folder(folder, exist_ok=True)
    else:
        folder, created = _new_dated_folder(task, Path(root or ".")), True
    try:
        yield folder
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def first_free(path: Path) -> Path:
    """path, or path_2, path_3, … (before the suffix): the first name not taken yet."""
    candidates = (
        path if n == 1 else path.with_name(f"{path.stem}_{n}{path.suffix}") for n in itertools.count(1)
    )
    return next(p for p in candidates if not p.exists())


def check_writable_file(path: Path) -> None:
    """A one-line error now, before the work, when `path` exists or cannot be written: its folder is made and a
    scratch file is written and removed there (a real test, also for root on a read-only or full disk)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another out= (results are never overwritten)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe") as probe:
            probe.write(b"0" * 4096)
            probe.flush()
    except OSError as error:
        raise ValueError(f"cannot write {path}: {error.strerror or error}") from error


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write `data` to path whole or not at all, never over an existing file. If that fails, the result is
    printed to stdout first, so that what was computed is not lost, then the failure is one line."""
    text = json.dumps(data, indent=2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text, exclusive=True)
    except NoSpaceLeft as error:
        print(text, file=sys.stdout, flush=True)
        raise NoSpaceLeft(path, "; the result is printed above") from error
    except OSError as error:
        print(text, file=sys.stdout, flush=True)
        raise ValueError(
            f"could not write {path}: {error.strerror or error}; the result is printed above"
        ) from error


def check_finite(images: torch.Tensor, ckpt: Any) -> None:
    """Refuse samples with NaN or inf (they would be written as black images without a word)."""
    bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
    if bad:
        raise ValueError(
            f"{bad} of {len(images)} samples are not finite (NaN/inf): the weights in {ckpt} are broken "
            "(did training diverge?); nothing was written"
        )


def log_written(count: int, written: dict[str, Path]) -> None:
    """Say where save_samples put a result set: the PNGs, the grid and the .npz."""
    log.info(
        "wrote %d PNGs to %s, the grid %s and %s", count, written["images"], written["grid"], written["npz"]
    )
