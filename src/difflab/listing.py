"""Items named in a one-line message: the first few, and how many more."""

from __future__ import annotations


def listed(items: list[str], shown: int) -> str:
    """The first `shown` items, and how many more there are."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")
