"""The word a mistyped one most likely meant, for "did you mean …?" hints. Imports nothing heavy: the entry points
answer a typo before torch loads."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest_word(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice `word` most likely meant: the same word in another case (DDIM: ddim), the same letters with two
    neighbours swapped (ddmi: ddim, which difflib's ratio puts behind ddpm), else difflib's closest above
    `cutoff`; None when nothing is close."""
    choices = list(choices)
    for choice in choices:
        if choice.lower() == word.lower():
            return choice
    for choice in choices:
        if len(choice) == len(word) and _one_swap_apart(word.lower(), choice.lower()):
            return choice
    close = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return close[0] if close else None


def _one_swap_apart(a: str, b: str) -> bool:
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return (
        len(differ) == 2
        and differ[1] == differ[0] + 1
        and a[differ[0]] == b[differ[1]]
        and a[differ[1]] == b[differ[0]]
    )
