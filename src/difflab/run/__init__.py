"""The run module: what the entry points call. Only this layer (and the entry points) reads Hydra configs."""

from .resolvers import register_resolvers

register_resolvers()

from .evaluate import evaluate  # noqa: E402  (resolvers first: configs may use them)
from .sample import sample  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["evaluate", "sample", "train"]
