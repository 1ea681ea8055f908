"""The one way into a checkpoint: read it as data, rebuild only allowlisted objects, compare it with a command.

Every reader (sample, edit, evaluate, resume, notebooks) comes through here. A checkpoint is data, never code:
`torch.load(weights_only=True)` refuses pickled objects, and the config stored inside may only name `_target_`s
from `ALLOWED_TARGETS` (plus those a user lists explicitly in `allowed_targets`).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from .diffusion import NoiseSchedule
from .diffusion.formulations.timestep_face import sampling_view

CONFIG_KEY = "difflab_config"

# What a stored config may build: difflab's own denoisers, schedules, samplers and datasets, by the exact
# dotted names its configs use. An exact string match, never a prefix: `difflab.models.unet.torch.load` resolves
# too, to something else entirely.
ALLOWED_TARGETS = frozenset(
    {
        "difflab.models.UNet",
        "difflab.diffusion.NoiseSchedule",
        "difflab.diffusion.NoiseSchedule.from_name",
        "difflab.diffusion.DDPMSampler",
        "difflab.diffusion.DDIMSampler",
        "difflab.diffusion.DPMSolverSampler",
        "difflab.diffusion.EulerSampler",
        "difflab.diffusion.HeunSampler",
        "difflab.data.ImageDataModule",
        "difflab.diffusion.formulations.VPTraining",
        "difflab.diffusion.formulations.EDM",
        "difflab.diffusion.formulations.Flow",
    }
)
# The stored groups a reader may instantiate.
BUILT_GROUPS = ("model", "schedule", "data", "sampler", "formulation")
_SHOWN = 6  # differences named in a one-line error; the rest are counted


@dataclass
class LoadedModel:
    """A denoiser with its schedule and the settings it was trained with."""

    net: nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    config: dict[str, Any]
    weights: str  # "ema" or "raw"
    global_step: int
    formulation: Any = None  # what trained it (None: a checkpoint from before formulations, trained as VP)

    @property
    def sampling_net(self) -> nn.Module:
        """The network as the samplers call it, model(x_t, t, cond) on `schedule` (EDM/flow: their ε-face)."""
        return sampling_view(self.net, self.schedule, self.prediction_type, self.formulation)[0]

    @property
    def condition(self) -> str | None:
        """What the model is conditioned on (None, "labels", …), as the data served it in training."""
        return (self.config.get("data") or {}).get("condition")

    @property
    def num_classes(self) -> int | None:
        return (self.config.get("model") or {}).get("num_classes")

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        data = self.config["data"]
        return (int(data["channels"]), int(data["image_size"]), int(data["image_size"]))


def read_checkpoint(
    path: str | Path, mmap: bool = False, allowed_targets: Iterable[str] = ()
) -> dict[str, Any]:
    """The checkpoint dict on the CPU, read with a weights-only unpickler; one-line errors for a missing,
    corrupt, foreign or code-carrying file, or a stored config naming a target outside the allowlist.
    mmap=True maps the tensors (cheap when only the config is needed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = _load(path, mmap)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler met a Python object (a class, a function call): never run it.
        detail = str(error).strip().splitlines()
        found = next((line.strip() for line in detail if "GLOBAL" in line or "Unsupported" in line), "")
        raise ValueError(
            f"refused checkpoint {path}: it holds Python objects, not only tensors and plain data"
            f"{f' ({found})' if found else ''}; difflab reads checkpoints weights-only and never runs their code"
        ) from error
    except Exception as error:  # torch raises several types for truncated or non-checkpoint files
        raise ValueError(f"could not read checkpoint {path}: {_why_unreadable(path, error)}") from error
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    if not isinstance(ckpt.get(CONFIG_KEY), dict):
        raise ValueError(f"{path} has no stored difflab config; was it written by difflab's train.py?")
    for group in BUILT_GROUPS:
        try:
            check_targets(ckpt[CONFIG_KEY].get(group), group, allowed_targets)
        except ValueError as error:
            raise ValueError(f"checkpoint {path}: {error}") from error
    return ckpt


def stored_step(path: str | Path) -> int | None:
    """The global step a checkpoint was saved at (tensors memory-mapped, nothing built); None when unreadable."""
    try:
        ckpt = _load(Path(path), mmap=True)
        return int(ckpt["global_step"])
    except Exception:
        return None


def _why_unreadable(path: Path, error: Exception) -> str:
    """What a file torch could not load is: a damaged PyTorch file, or no PyTorch file at all (a text file,
    an image) where torch's own message (`KeyError: 101`) would say nothing."""
    with path.open("rb") as file:
        head = file.read(4)
    if head.startswith(b"PK") or head[:1] == b"\x80":  # a zip archive (torch.save) or a legacy pickle
        return f"the file is damaged or cut short ({type(error).__name__}: {error})"
    return "it is not a PyTorch checkpoint file (neither a zip archive nor a pickle)"


def _load(path: Path, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise
    except Exception:
        if not mmap:
            raise
        # Not a zip archive (a legacy or damaged file): a plain load says which, or reads the legacy one.
        return torch.load(path, map_location="cpu", weights_only=True)


def targets(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(key, target) for every `_target_` in a nested config of dicts and lists."""
    if isinstance(node, Mapping):
        if node.get("_target_") is not None:
            yield where, str(node["_target_"])
        for key, child in node.items():
            yield from targets(child, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for i, child in enumerate(node):
            yield from targets(child, f"{where}[{i}]")


def check_targets(node: Any, where: str, allowed: Iterable[str] = ()) -> None:
    """Refuse, in one line naming the key, any `_target_` under `node` that is not allowlisted."""
    permitted = ALLOWED_TARGETS | set(allowed)
    for key, target in targets(node, where):
        if target not in permitted:
            raise ValueError(
                f"{key}._target_={target} is not a difflab model, schedule, sampler or dataset; refusing to "
                f"build it from a checkpoint (if you trust it, add allowed_targets=[{target}])"
            )


def build(config: Mapping[str, Any], key: str, allowed: Iterable[str] = ()) -> Any:
    """Instantiate config[key] (a stored config's group, e.g. 'model') once its targets are checked."""
    if not isinstance(config.get(key), Mapping):
        raise ValueError(f"the stored config has no {key} group")
    check_targets(config[key], key, allowed)
    return instantiate(OmegaConf.create(dict(config[key])))


def network_state(ckpt: Mapping[str, Any], key: str = "state_dict") -> dict[str, torch.Tensor] | None:
    """The denoiser's weights under ckpt[key] without the `net.` prefix; None when the key is absent.

    "state_dict" holds the EMA weights when the run had EMA; "current_model_state" the raw ones beside them.
    """
    state = ckpt.get(key)
    if not isinstance(state, Mapping):
        return None
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def state_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps `found` weights from loading into a model whose state is `expected` (None when they fit)."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    for what, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape (checkpoint vs model)", shapes),
    ):
        if items:
            problems.append(f"{len(items)} {what}: {_listed(items, 3)}")
    return "; ".join(problems) or None


def load_model(
    path: str | Path, device: torch.device | str = "cpu", allowed_targets: Iterable[str] = ()
) -> LoadedModel:
    """Rebuild the denoiser and schedule from the checkpoint's config and load its (EMA, when present) weights.

    `path` is a .ckpt written by train.py, a train.py run folder (its checkpoints/last.ckpt) or a folder written
    by `export.py format=safetensors`."""
    path = run_checkpoint(path)
    if Path(path).is_dir():
        config, state, weights, step = read_model_folder(path, allowed_targets)
    else:
        ckpt = read_checkpoint(path, allowed_targets=allowed_targets)
        config, state = ckpt[CONFIG_KEY], network_state(ckpt) or {}
        # WeightAveraging stores the averaged weights as state_dict and the raw ones beside them.
        weights, step = ("ema" if "current_model_state" in ckpt else "raw"), int(ckpt.get("global_step", 0))
    net = build(config, "model", allowed_targets)
    schedule = build(config, "schedule", allowed_targets)
    problem = state_mismatch(net.state_dict(), state)
    if problem:
        raise ValueError(f"checkpoint {path} does not match its stored model config: {problem}")
    net.load_state_dict(state)
    # NHWC: the faster convolution layout for sampling too (the same values; see DiffusionModule).
    net.to(device, memory_format=torch.channels_last).eval()
    # The formulation is data like the rest (allowlisted targets); checkpoints from before it load as VP.
    formulation = build(config, "formulation", allowed_targets) if config.get("formulation") else None
    _, schedule, prediction_type = sampling_view(
        net, schedule, config.get("prediction_type", "epsilon"), formulation
    )
    return LoadedModel(net, schedule, prediction_type, config, weights, step, formulation)


def run_checkpoint(path: str | Path) -> str | Path:
    """A train.py run folder's checkpoints/last.ckpt; any other path as given."""
    last = Path(path) / "checkpoints" / "last.ckpt"
    return last if not (Path(path) / FOLDER_CONFIG).exists() and last.is_file() else path


# --- a model folder: safetensors weights + a JSON config (export.py format=safetensors) ------------------------

FOLDER_CONFIG = "difflab_config.json"
FOLDER_WEIGHTS = "model.safetensors"
FOLDER_FORMAT = "difflab-safetensors/1"


def read_model_folder(
    path: str | Path, allowed_targets: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, torch.Tensor], str, int]:
    """(config, network weights, "ema"|"raw", global step) of a model folder; only JSON and safetensors are
    read, so no code can run, and the config's targets pass the same allowlist as a checkpoint's."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    config_file, weights_file = folder / FOLDER_CONFIG, folder / FOLDER_WEIGHTS
    if not config_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(
            f"{folder} is not a difflab model folder (it needs {FOLDER_CONFIG} and {FOLDER_WEIGHTS}, "
            "as export.py format=safetensors writes them) nor a run folder (checkpoints/last.ckpt)"
        )
    try:
        record = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"could not read {config_file}: {error}") from error
    if (
        not isinstance(record, dict)
        or record.get("format") != FOLDER_FORMAT
        or not isinstance(record.get("config"), dict)
    ):
        raise ValueError(f"{config_file} is not a difflab model config (format {FOLDER_FORMAT})")
    for group in BUILT_GROUPS:
        try:
            check_targets(record["config"].get(group), group, allowed_targets)
        except ValueError as error:
            raise ValueError(f"model folder {folder}: {error}") from error
    try:
        state = load_file(weights_file)
    except (OSError, SafetensorError) as error:
        raise ValueError(f"could not read {weights_file}: {error}") from error
    return record["config"], state, str(record.get("weights", "raw")), int(record.get("global_step", 0))


def stored_value(config: Mapping[str, Any], dotted: str) -> Any:
    """config['a']['b'] for 'a.b'; None when any part is absent."""
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def leaves(value: Any, prefix: str) -> dict[str, Any]:
    """{'a.b.c': leaf} for every leaf of a nested dict under `prefix`."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(leaves(child, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def contradictions(
    wanted: Mapping[str, Any], stored: Mapping[str, Any], stored_as: Mapping[str, str] | None = None
) -> list[str]:
    """`key=new (checkpoint: old)` for each wanted leaf the stored config holds with another value; `stored_as`
    maps a key as the user typed it to where the stored config keeps it (image_size -> data.image_size).

    Keys only one side has are skipped: a config key added after the checkpoint was written is not a change.
    """
    found = []
    for key, value in wanted.items():
        for leaf, new in leaves(value, key).items():
            old = stored_value(stored, (stored_as or {}).get(leaf, leaf))
            if old is not None and old != new:
                found.append(f"{leaf}={new} (checkpoint: {old})")
    return found


def check_contradictions(
    wanted: Mapping[str, Any],
    stored: Mapping[str, Any],
    path: Path | str,
    hint: str,
    stored_as: Mapping[str, str] | None = None,
) -> None:
    """A one-line ValueError naming every wanted setting that contradicts the checkpoint's config."""
    found = contradictions(wanted, stored, stored_as)
    if found:
        raise ValueError(f"the config contradicts checkpoint {path}: {_listed(found, _SHOWN)}; {hint}")


def _listed(items: list[str], shown: int) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")
