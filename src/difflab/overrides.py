"""An override as a message says it for a user to copy: `key=value`, quoted where a shell or Hydra's grammar would
read the value otherwise (a run folder with a space, a comma that Hydra takes for a sweep, parentheses)."""

from __future__ import annotations

import re
import shlex

# What Hydra and a shell read as plain text in a value; anything else is quoted.
_PLAIN = re.compile(r"[A-Za-z0-9_/.+\-@~%:]*")


def pasteable(key: str, value: object) -> str:
    """`key=value` as one shell word that Hydra reads back as `value`: the value in Hydra's double quotes when
    it holds more than plain path characters, the whole word then in shell quotes."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return f"{key}={text}"
    # In Hydra's quotes a run of backslashes is halved only before a quote or the end: doubled there, kept as typed
    quoted = '"' + re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), text) + '"'
    return shlex.quote(f"{key}={quoted}")
