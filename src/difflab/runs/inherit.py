"""Which of a run folder's own overrides a resume takes: a run folder is data, never code.

`train.py ckpt_path=<run>/checkpoints/last.ckpt` starts from the overrides of the run's latest launch
(`<run>/.hydra/overrides.yaml`, or once resumed the newest `<run>/.hydra/resumed_step_<step>/overrides.yaml`). That file may come from someone else, so an override is taken only when it
sets the value of a key the config already has, to plain data:

- `key=value` only: no `+key` / `++key` (a new key, e.g. a callback), no `~key`, no sweep (`choice(…)`),
  no other package (`group@pkg=…`);
- the value is a scalar or a list of scalars, never a dict (which could hold a `_target_`) and never an
  interpolation (`${…}` runs resolvers);
- the key names no `_target_`, `_args_`, … (no part starting with `_`), and no place where files are written
  (`hydra.*`, `paths.*`, a `dirpath`, `save_dir`, …: the command line says where a run writes);
- a group choice (`model=unet_small`, `callbacks=[default,fid]`) names config files of difflab's own conf/.
Anything else refuses the resume in one line naming the override, before Hydra composes or anything runs: a
resume that silently dropped part of a run's recipe would train something else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import OmegaConf

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
NEVER_INHERITED = ("ckpt_path",)  # the resume's own choice

# Leaf keys that say where files are written; a run folder must not point them elsewhere.
PLACE_KEYS = {
    "dir",
    "dirpath",
    "save_dir",
    "default_root_dir",
    "root_dir",
    "output_dir",
    "log_dir",
    "cache_dir",
    "text_cache_dir",
    "filename",
}
PLACE_GROUPS = ("hydra", "paths")
_OPTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def parse(override: str) -> Override:
    """One command-line override as Hydra reads it (quotes removed, values typed)."""
    try:
        return OverridesParser.create().parse_override(override)
    except HydraException as error:
        raise ValueError(f"cannot read the override {override!r}: {str(error).splitlines()[0]}") from None


def override_key(override: str) -> str:
    """`+a.b=1`, `++a.b=1`, `~a.b` and `a.b=1` all set the key `a.b`."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def given_value(args: list[str], key: str) -> str | None:
    """The last value given to `key` on a command line, as Hydra reads it (`ckpt_path="a b"` is `a b`)."""
    found = [a for a in args if "=" in a and not a.startswith("-") and override_key(a) == key]
    if not found:
        return None
    value = parse(found[-1]).value()
    return None if value is None else str(value)


def _is_plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_plain(v) and not isinstance(v, list) for v in value)
    if isinstance(value, str):
        return "${" not in value
    return value is None or isinstance(value, bool | int | float)


def why_not_inherited(text: str, conf_dir: Path) -> str | None:
    """Why a resume may not take the stored override `text` (None when it may)."""
    try:
        override = parse(text)
    except ValueError:
        return "it cannot be read as an override"
    key = override.key_or_group
    if override.type == OverrideType.DEL:
        return "it deletes a key"
    if override.type != OverrideType.CHANGE:
        return "it adds a key"
    if override.is_sweep_override():
        return "it is a sweep"
    if override.package is not None:
        return "it places a config at another package"
    parts = re.split(r"[./]", key)
    if any(part.startswith("_") for part in parts):
        return "it sets a `_target_` or another `_` key"
    if parts[0] in PLACE_GROUPS or parts[-1] in PLACE_KEYS:
        return "it says where files are written"
    value = override.value()
    if not _is_plain(value):
        return "its value is not plain data (a dict or an interpolation)"
    if (conf_dir / key).is_dir():  # a group choice: each option must be one of difflab's own config files
        options = value if isinstance(value, list) else [value]
        for option in options:
            if option is None:
                continue
            name = str(option)
            if not _OPTION_NAME.fullmatch(name) or not (conf_dir / key / f"{name}.yaml").is_file():
                return f"{key}={name} is not a config in {conf_dir / key}"
    return None


def latest_overrides_file(run_dir: Path) -> Path:
    """The overrides of the run's latest launch: its first (.hydra/overrides.yaml) or, once resumed, the newest
    .hydra/resumed_step_<step>/overrides.yaml. Each launch's file holds its whole recipe (what it inherited and
    what it was given), so a run extended by a resume and stopped resumes towards the extended end."""
    launches = [
        run_dir / OVERRIDES_FILE,
        *(run_dir / OVERRIDES_FILE.parent).glob(f"resumed_step_*/{OVERRIDES_FILE.name}"),
    ]
    written = [p for p in launches if p.is_file()]
    # Newest written; a rewind (a resume from an earlier step) is a later launch with a smaller step.
    return max(written, key=lambda p: (p.stat().st_mtime, p.parent.name), default=run_dir / OVERRIDES_FILE)


def stored_overrides(run_dir: Path) -> list[str]:
    """The overrides file of the run's latest launch as a list of strings; [] when there is none. A file that is
    not a YAML list of strings is refused in one line (it is no file Hydra wrote)."""
    path = latest_overrides_file(run_dir)
    if not path.is_file():
        return []
    try:
        stored = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:
        stored = None
    if not isinstance(stored, list) or not all(isinstance(o, str) for o in stored):
        raise ValueError(
            f"{path} is not a list of overrides: fix it (a YAML list, one override per line: - model=unet_tiny), "
            "or remove it and give the run's settings on the command line, or start a new run"
        )
    return stored


def run_folder_of(args: list[str]) -> Path | None:
    """The folder of the run being resumed: hydra.run.dir for ckpt_path=last, else the checkpoint's run folder
    (<run>/checkpoints/<file>); None when this is not a resume."""
    ckpt = given_value(args, "ckpt_path")
    if not ckpt:
        return None
    if ckpt == "last":
        run_dir = given_value(args, "hydra.run.dir")
        return Path(run_dir) if run_dir else None
    return Path(ckpt).parent.parent


def inherited_overrides(args: list[str], conf_dir: Path, say: Callable[[str], object] = print) -> list[str]:
    """The overrides of the run being resumed that the command line does not set itself; ValueError naming the
    first one a resume may not take (see the module docstring). `say`: where the ones dropped are named."""
    run_dir = run_folder_of(args)
    if run_dir is None:
        return []
    given = {override_key(a) for a in args if not a.startswith("-")}
    taken, replaced = [], []
    for text in stored_overrides(run_dir):
        key = override_key(text)
        if key in given or key in NEVER_INHERITED:
            continue
        if any(key.startswith(f"{other}.") for other in given):  # under a group chosen anew (trainer=ddp)
            replaced.append(text)
            continue
        problem = why_not_inherited(text, conf_dir)
        if problem:
            raise ValueError(
                f"{latest_overrides_file(run_dir)} holds {text!r}, which a resume does not take from a run folder "
                f"({problem}); give it on the command line yourself if you trust it, or remove it from that file"
            )
        taken.append(anchored(text, launch_cwd(run_dir)))
    # Hydra would refuse them ("Key 'strategy' is not in struct") or apply them to another option.
    if replaced:
        say(f"not taken from the run, under a group given now: {' '.join(replaced)}")
    # A trial of a search resumes in its own folder with the search's settings (callbacks, optimized_metric):
    # before, its hparams_search (hydra.mode MULTIRUN) started a new search elsewhere.
    if any(override_key(t) == "hparams_search" for t in taken) and not {"-m", "--multirun"} & set(args):
        taken.append("hydra.mode=RUN")
    return taken


# Keys whose value is a path read by the run: typed relative to the folder the run was launched from.
PATH_KEYS = ("data.root", "autoencoder", "init_from", "latent_cache_dir", "metrics.inception_weights")


def launch_cwd(run_dir: Path) -> Path | None:
    """The folder the run's latest launch started in (hydra.runtime.cwd of its hydra.yaml); None when unknown."""
    try:
        cwd = OmegaConf.load(latest_overrides_file(run_dir).parent / "hydra.yaml").hydra.runtime.cwd
    except Exception:  # no hydra.yaml (a folder made by hand), or not Hydra's: the path is taken as typed
        return None
    return Path(str(cwd)) if cwd else None


def anchored(text: str, cwd: Path | None) -> str:
    """A stored override of a PATH_KEYS path relative to the launch folder `cwd`, made absolute when that is where
    it exists: before, a resume started from another folder read it against its own ("autoencoder not found").
    Anything else (a Hub id, a path that exists only as typed) is kept as typed."""
    key = override_key(text)
    value = parse(text).value()
    if cwd is None or key not in PATH_KEYS or not isinstance(value, str) or not value:
        return text
    path = Path(value).expanduser()
    if path.is_absolute() or not (cwd / path).exists() or "'" in str(cwd / path):
        return text
    return f"{key}='{cwd / path}'"


def with_run_overrides(argv: list[str], conf_dir: Path) -> list[str]:
    """argv (script first) with the resumed run's own overrides put before the ones given now: a resume
    starts from the run's own command line, and overrides given now win."""
    return [argv[0], *inherited_overrides(argv[1:], conf_dir), *argv[1:]]
