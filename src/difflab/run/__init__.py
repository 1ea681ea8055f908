"""The run module: the entry functions, one module each — difflab.run.train.train, .sample.sample (also editing
and super-resolution), .evaluate.evaluate, .export.export; only this layer (and the entry points) reads Hydra configs.
Importing it registers the config resolvers and reads .env files, and nothing heavier: an entry function (and with it
torch and Lightning) is imported by whoever calls it, so that Hydra answers --help and typos at once."""

from .environment import load_env_files
from .resolvers import register_resolvers

load_env_files()
register_resolvers()
