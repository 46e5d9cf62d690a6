"""Writing YAML scalars by hand: volantd has no YAML library, and needs only a few lines."""

from __future__ import annotations

import json
import re

_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_RESERVED = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def scalar(value: str) -> str:
    """`value` as a YAML string: plain when it cannot be read as anything else (``eth0``),
    otherwise double-quoted (``"52:54:00:12:34:56"``, which YAML 1.1 would read as a
    base-60 number). A JSON string is a valid double-quoted YAML scalar."""
    if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
        return value
    return json.dumps(value)
