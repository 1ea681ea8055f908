"""difflab: train, sample, edit and evaluate diffusion models.

`difflab.load(path)` returns a DiffusionPipeline (see difflab.pipeline); it is imported on first use, so
`import difflab` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DiffusionPipeline", "load"]

if TYPE_CHECKING:
    from .pipeline import DiffusionPipeline, load


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'difflab' has no attribute {name!r}")
