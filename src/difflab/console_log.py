"""Text printed for a person (summaries, progress lines, error lines) is also kept in the run's log file.

A train.py run's log file is Hydra's job log, <run>/train.log: a FileHandler on the root logger. Text written
with `echo` goes to the console as it is and to every such file as a log record, so the file holds what the
console showed. Where logging has no file handler (sample.py, a notebook) `echo` is a plain print.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
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


# What was said before the run's log file was open (a resume's checks, in train.py's preflight), until it is.
_BEFORE_THE_LOG: list[tuple[int, str]] = []


def said_before_the_log(text: str, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Print `text` now and keep it for the run's log file, which the run opens later (keep_for_the_log)."""
    print(text, file=stream or sys.stdout, flush=True)
    _BEFORE_THE_LOG.append((level, text))


class _SaidBeforeTheLog(logging.Handler):
    """difflab's log records as the console shows them (`warning: …` for a warning; Hydra would label them
    [HYDRA], as its own), kept for the run's log file."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:  # the file's records name their level themselves
            print(f"{record.levelname.lower()}: {text}", file=sys.stderr, flush=True)
            _BEFORE_THE_LOG.append((record.levelno, text))
        else:
            said_before_the_log(text, record.levelno)


@contextlib.contextmanager
def kept_for_the_log() -> Iterator[None]:
    """Within: what difflab logs, and the warnings it shows, are kept for the run's log file as well (before,
    a resume's "the seed differs" reached the console but not train.log, which holds everything else)."""
    logger, show = logging.getLogger("difflab"), warnings.showwarning
    handler, propagate = _SaidBeforeTheLog(), logger.propagate

    def shown_and_kept(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ):
        show(message, category, filename, lineno, file, line)
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        _BEFORE_THE_LOG.append((logging.WARNING, text))

    logger.addHandler(handler)
    logger.propagate = False
    warnings.showwarning = shown_and_kept
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        warnings.showwarning = show


def write_what_was_said_before() -> None:
    """Write into the run's log files what was said before they were open (once; nothing without a file)."""
    if not log_files():
        return
    for level, text in _BEFORE_THE_LOG:
        to_log_files(text, level)
    _BEFORE_THE_LOG.clear()


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
