"""Text printed for a person (summaries, progress lines, error lines) is also kept in the run's log file.

A train.py run's log file is Hydra's job log, <run>/train.log: a FileHandler on the root logger. Text written
with `echo` goes to the console as it is and to every such file as a log record, so the file holds what the
console showed. Where logging has no file handler (sample.py, a notebook) `echo` is a plain print.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

_log = logging.getLogger("difflab")


def log_files() -> list[logging.FileHandler]:
    """The root logger's file handlers: the run's log files (none outside a Hydra run)."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log_files(text: str, level: int = logging.INFO, exc_info: Any = None) -> None:
    """Write `text` to the run's log files only: for what the console shows another way (a rich panel, a live
    bar, Python's own warning or traceback print)."""
    files = log_files()
    if not files:
        return
    if exc_info is True:
        exc_info = sys.exc_info()
    record = _log.makeRecord(_log.name, level, __file__, 0, text, None, exc_info)
    for handler in files:
        if record.levelno >= handler.level:
            handler.handle(record)


def echo(text: str, stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Print `text` unchanged (to stdout, or `stream`) and keep it in the run's log files."""
    print(text, file=stream or sys.stdout, flush=True)
    to_log_files(text, level)


PACKAGE_DIR = str(Path(__file__).resolve().parent)


def own_warnings_plain() -> None:
    """Show a warning difflab raised as `warning: <Category>: <message>` (it speaks to the user: the source file,
    line and code Python adds say nothing to them); a library's warning keeps Python's form. Idempotent; every
    entry point installs it (run.cli), a train run again with its other console settings."""
    if not getattr(warnings.formatwarning, "difflab_own", False):
        warnings.formatwarning = _plain(warnings.formatwarning)


def _plain(formatwarning: Callable[..., str]) -> Callable[..., str]:
    def plain(
        message: Any, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        if str(filename).startswith(PACKAGE_DIR):
            return f"warning: {category.__name__}: {message}\n"
        return formatwarning(message, category, filename, lineno, line)

    plain.difflab_own = True  # type: ignore[attr-defined]
    return plain
