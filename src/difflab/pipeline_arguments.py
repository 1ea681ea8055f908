"""What pipe.sample takes: sample.py's defaults, read from the files sample.py composes (conf/sample.yaml,
conf/sampler/<name>.yaml) so the two cannot drift, and a one-line refusal of an argument it does not take."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .nearest_word import nearest_word

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the project's conf/, beside src/


def _conf_file(relative: str) -> Path:
    path = CONF_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: difflab reads sample.py's defaults from its conf/ folder (install difflab from "
            "its source checkout with pip install -e .)"
        )
    return path


# sample.py's keys that pipe.sample takes under the same name (superres.consistency: consistency=).
SAMPLE_KEYS = (
    "mode",
    "seed",
    "batch_size",
    "precision",
    "cpu_threads",
    "guidance",
    "labels",
    "prompt",
    "negative_prompt",
    "image",
    "mask",
    "strength",
    "inpaint",
)


def cli_defaults() -> dict[str, Any]:
    """sample.py's defaults (conf/sample.yaml): the sampler's name, n and every key of SAMPLE_KEYS and consistency."""
    conf = OmegaConf.load(_conf_file("sample.yaml"))
    choices = {k: v for entry in conf.defaults if OmegaConf.is_dict(entry) for k, v in entry.items()}
    values = OmegaConf.to_container(conf, resolve=False)
    return {
        "sampler": choices["sampler"],
        "n": values["n"],
        **{key: values[key] for key in SAMPLE_KEYS},
        "consistency": values["superres"]["consistency"],
    }


def sampler_config(name: str) -> Any:
    """conf/sampler/<name>.yaml, the partial that `sample.py sampler=<name>` instantiates."""
    # A name, not a path: before, sampler="../sampler/heun" was read and "../sample" gave a raw KeyError.
    if CONF_DIR.is_dir() and (not isinstance(name, str) or name not in sampler_names()):
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(sampler_names())}")
    return OmegaConf.load(_conf_file(f"sampler/{name}.yaml"))


def sampler_names() -> list[str]:
    """The samplers sample.py's sampler= names: conf/sampler/<name>.yaml."""
    return sorted(p.stem for p in (CONF_DIR / "sampler").glob("*.yaml"))


def sampler_class(name: str) -> type:
    """The class conf/sampler/<name>.yaml builds."""
    from hydra.utils import get_class

    return get_class(str(sampler_config(name)["_target_"]))


def sampler_knobs(sampler_class: type) -> list[str]:
    """The keywords a sampler class takes besides the schedule and prediction type: its own, and its bases'
    keyword-only ones, which its **options pass on (the base's core it gives itself)."""
    names: list[str] = []
    inits = [klass for klass in sampler_class.__mro__ if "__init__" in vars(klass) and klass is not object]
    for depth, klass in enumerate(inits):
        kinds = (inspect.Parameter.KEYWORD_ONLY,) + (
            () if depth else (inspect.Parameter.POSITIONAL_OR_KEYWORD,)
        )
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in kinds and p.name not in ("self", "schedule", "prediction_type", *names):
                names.append(p.name)
    return names


def refuse_unknown(given: Mapping[str, Any], own: Sequence[str], known: Sequence[str], whose: str) -> None:
    """One line naming the first argument of `given` that pipe.sample does not take (`own`, or `known`: what
    `whose` takes, e.g. "the ddim sampler"), with the nearest name it takes."""
    knobs = [name for name in known if name not in own]
    for key, value in given.items():
        if key in own or key in known:
            continue
        # Another sampler's knob (order=2 to DDIM): which sampler= takes it, as sample.py says (before, the
        # nearest word of this sampler's: "did you mean mode?").
        takers = [name for name in sampler_names() if key in sampler_knobs(sampler_class(name))]
        nearest = None if takers else nearest_word(key, [*own, *known])
        hint = f" (did you mean {nearest}?)" if nearest else ""
        hint = f" (sampler={' or '.join(repr(t) for t in takers)} takes it)" if takers else hint
        raise ValueError(
            f"unknown argument {key}={value!r}{hint}; pipe.sample takes {', '.join(own)} and {whose}'s "
            f"{', '.join(knobs)}"
        )


def refuse_unknown_inpaint(given: Mapping[str, Any], known: Sequence[str]) -> None:
    """One line naming the first key of inpaint= that RePaint does not take (or saying it takes a mapping)."""
    if not isinstance(given, Mapping):
        raise ValueError(f"inpaint={given!r} is not RePaint's settings: give a mapping of {', '.join(known)}")
    for key, value in given.items():
        if key not in known:
            nearest = nearest_word(key, known)
            hint = f" (did you mean inpaint.{nearest}?)" if nearest else ""
            raise ValueError(
                f"unknown argument inpaint.{key}={value!r}{hint}; inpaint= takes {', '.join(known)}"
            )
