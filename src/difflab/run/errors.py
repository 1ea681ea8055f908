"""Turn the errors a user can cause into one clear line instead of a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import InstantiationException

T = TypeVar("T")

# Errors that name a problem with the user's input (paths, sizes, configs); anything else is a bug
# and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, InstantiationException)


def root_cause(error: BaseException) -> BaseException:
    """The innermost cause of an error: Hydra wraps a constructor's ValueError in InstantiationException."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator for entry points: print `error: <message>` and exit 2 on a user error."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as error:
            cause = root_cause(error)
            message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper
