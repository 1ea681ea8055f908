"""Progress a person can read: a rich bar on a terminal; where stdout is a file (a SLURM .out, `> log`) plain
lines every few seconds with the same fields, so a cluster log shows life too. The run's log file (train.log)
gets the plain lines either way: a live bar's redraws are not worth keeping."""

from __future__ import annotations

import sys
import time
from typing import Any

from .console_log import echo, to_log_files

LIVE_FIELDS_EVERY_S = 0.5  # how fresh the live bar's fields need to be (rich redraws it 10 times a second)


def duration(seconds: float) -> str:
    """1:02:03 / 4:05 for an ETA or an elapsed time."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plain_number(value: float) -> str:
    """Three significant figures without an exponent: '1004', not '1e+03', when sampling is fast."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


class Progress:
    """Counts `done` of `total` units of work. Rich bar when stdout is a terminal (and `live`), else a plain
    line `<what>: done/total unit · rate/s · ETA · extra` at most every `every_n_seconds` and at the end; the
    run's log file gets those lines also under a live bar.

    Use as a context manager; `update(done, **fields)` or `advance(n)`; fields (e.g. loss) are shown as given.
    `per_unit=("images", k)`: each unit is worth k of something a person counts (images per sampler step), so
    its rate (images/s) is shown beside the units'.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "it",
        start: int = 0,
        every_n_seconds: float = 10.0,
        live: bool | None = None,
        per_unit: tuple[str, float] | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.per_unit = per_unit
        self.done = self.start = start
        self.every_n_seconds = every_n_seconds
        self.live = sys.stdout.isatty() if live is None else live
        self.fields: dict[str, Any] = {}
        self._t0 = self._last_line = self._done_at = time.monotonic()
        self._fields_at = -float("inf")
        self._printed_done: int | None = None
        self._rich: Any = None

    def __enter__(self) -> Progress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(f"{self.unit} · {{task.fields[rate]}} · ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(
                self.what, total=self.total, completed=self.done, rate="", extra=""
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(failed=exc[0] is not None)

    def rate(self) -> float:
        # Up to the last unit: the last line, printed at close, does not count what came after it as units' time.
        elapsed = (self._done_at if self.done == self.total else time.monotonic()) - self._t0
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def rates(self) -> str:
        """'2.50 steps/s · 10.0 images/s': the units' rate, and what they are worth when per_unit is set."""
        rate = self.rate()
        text = f"{rate:.2f} {self.unit}/s"
        if self.per_unit is not None:
            name, worth = self.per_unit
            text += f" · {plain_number(rate * worth)} {name}/s"
        return text

    def eta(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if self.total is not None and rate > 0 else None

    def describe(self, what: str) -> None:
        """Change what the bar says it is doing (e.g. 'sampling the grid' during training)."""
        self.what = what
        if self._rich is not None:
            self._rich.update(self._task, description=what)

    def due(self, done: int) -> bool:
        """Whether fields given to update(done) now would be seen: a plain line is due, or the live bar's fields
        are older than LIVE_FIELDS_EVERY_S. Lets a caller skip fetching fields that cost (a loss on a GPU)."""
        now = time.monotonic()
        if self._rich is not None:
            return now - self._fields_at >= LIVE_FIELDS_EVERY_S
        return now - self._last_line >= self.every_n_seconds or done == self.total

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.update(self.done + n, **fields)

    def update(self, done: int, **fields: Any) -> None:
        if done != self.done:
            self._done_at = time.monotonic()
        self.done = done
        if fields:
            self.fields.update(fields)
            self._fields_at = time.monotonic()
        extra = " · ".join(f"{k} {_short(v)}" for k, v in self.fields.items())
        if self._rich is not None:
            self._rich.update(self._task, completed=done, rate=self.rates(), extra=extra)
        # The last line is close()'s: what comes after the last unit (a run's final validation) is in it.
        if time.monotonic() - self._last_line >= self.every_n_seconds and done != self.total:
            self._print_line()

    def _print_line(self, suffix: str = "") -> None:
        """The plain line: on the console where there is no live bar, and in the run's log file."""
        self._last_line, self._printed_done = time.monotonic(), self.done
        total = f"/{self.total}" if self.total is not None else ""
        eta = self.eta()
        parts = [f"{self.what}: {self.done}{total} {self.unit}", self.rates()]
        parts.append(
            f"ETA {duration(eta)}" if eta is not None else f"elapsed {duration(time.monotonic() - self._t0)}"
        )
        parts += [f"{k} {_short(v)}" for k, v in self.fields.items()]
        line = " · ".join(parts) + suffix
        if self._rich is not None:
            to_log_files(line)
        else:
            echo(line)

    def close(self, failed: bool = False) -> None:
        if not failed and self._printed_done != self.done:
            self._print_line()
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
