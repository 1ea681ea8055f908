"""The run module: the entry functions train, sample (and edit), evaluate, export; only this layer (and the entry
points) reads Hydra configs. Importing it registers the config resolvers and reads .env files; each entry function
(and with it torch and Lightning) is imported on first use, so that Hydra answers --help and typos at once."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .environment import load_env_files
from .resolvers import register_resolvers

if TYPE_CHECKING:
    from .edit import edit
    from .evaluate import evaluate
    from .export import export
    from .sample import sample
    from .train import train

load_env_files()
register_resolvers()

__all__ = ["edit", "evaluate", "export", "sample", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(f".{name}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
