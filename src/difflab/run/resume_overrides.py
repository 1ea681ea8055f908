"""A resume starts from the run's own command line: `python train.py ckpt_path=last hydra.run.dir=<run>` reuses
the overrides stored in <run>/.hydra/overrides.yaml, so the user does not have to repeat them. Overrides given
now come after them and win (and a contradiction with the checkpoint is still refused, later)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
NEVER_INHERITED = ("ckpt_path",)


def override_key(override: str) -> str:
    """`+a.b=1`, `++a.b=1`, `~a.b` and `a.b=1` all set the key `a.b`."""
    return override.split("=", 1)[0].lstrip("+~")


def _value(args: list[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if "=" in a and override_key(a) == key]
    return found[-1] if found else None


def run_folder_of(args: list[str]) -> Path | None:
    """The folder of the run being resumed: hydra.run.dir for ckpt_path=last, else the checkpoint's run folder
    (<run>/checkpoints/<file>); None when this is not a resume."""
    ckpt = _value(args, "ckpt_path")
    if not ckpt:
        return None
    if ckpt == "last":
        run_dir = _value(args, "hydra.run.dir")
        return Path(run_dir) if run_dir else None
    return Path(ckpt).parent.parent


def inherited_overrides(args: list[str]) -> list[str]:
    """The overrides of the run being resumed that the command line does not set itself."""
    run_dir = run_folder_of(args)
    if run_dir is None or not (run_dir / OVERRIDES_FILE).is_file():
        return []
    try:
        stored = list(OmegaConf.load(run_dir / OVERRIDES_FILE))
    except Exception:  # unreadable: resume with the command line alone; the checkpoint check still applies
        return []
    given = {override_key(a) for a in args if not a.startswith("-")}
    return [
        str(o)
        for o in stored
        if override_key(str(o)) not in given and override_key(str(o)) not in NEVER_INHERITED
    ]


def with_run_overrides(argv: list[str]) -> list[str]:
    """argv (script first) with the resumed run's own overrides put before the ones given now."""
    inherited = inherited_overrides(argv[1:])
    return [argv[0], *inherited, *argv[1:]]
