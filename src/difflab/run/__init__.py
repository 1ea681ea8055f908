"""The run module: the entry functions train, sample (also editing and super-resolution), evaluate, export; only this layer (and the entry points)
reads Hydra configs. Files: common (shared helpers), errors, preflight, resume, cluster, wandb_glue, resolvers."""

from .environment import load_env_files
from .resolvers import register_resolvers

load_env_files()
register_resolvers()

from .evaluate import evaluate  # noqa: E402  (resolvers first: configs may use them)
from .export import export  # noqa: E402
from .sample import sample  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["evaluate", "export", "sample", "train"]
