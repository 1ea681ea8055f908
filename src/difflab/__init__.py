"""difflab: train, sample, edit and evaluate diffusion models.

`difflab.load(path)` returns a DiffusionPipeline (see difflab.pipeline); it is imported on first use, so
`import difflab` stays fast.

Verbs in function names mean one thing each (tests/test_naming.py holds src/ to them):
- `check_x(...)` validates and returns None; bad input raises one line naming the problem. It never
  changes its arguments and never hands the value back.
- `require_x(...)` returns x (a module, a setting) when it is there, else raises one line saying how to get it.
- `refuse_x(...)` raises when given x (an unknown argument, a setting that cannot apply); returns None.
- `resolve_x(...)` returns x worked out from what was given plus defaults or the environment; it never
  changes its arguments (a function that fills in a config in place says so: `fill_x`).
- `read_x` returns what a file holds as plain data; `load_x` reads and builds the object (a network, model
  tensors); `open_x` returns a lazy handle (a dataset, a stream) that reads on use; `write_x`/`save_x` write.
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


def __dir__() -> list[str]:
    # Tab completion (a notebook, an interactive shell) lists load and DiffusionPipeline before their first use.
    return sorted({*globals(), *__all__})
