"""VM names: DNS labels, since they become hostnames and replica names."""

from __future__ import annotations

import re

from volantd.errors import VolantError

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class InvalidNameError(VolantError):
    """A VM or deployment name that is not a DNS label."""


def check_name(name: str, what: str = "vm") -> str:
    """``name`` if it is a DNS label (lower-case letters, digits, inner hyphens, 1-63)."""
    if not _LABEL.match(name):
        raise InvalidNameError(
            f"{what} name {name!r} is not a DNS label: use 1-63 lower-case letters, digits "
            "and hyphens, starting and ending with a letter or digit (e.g. web-1)"
        )
    return name
