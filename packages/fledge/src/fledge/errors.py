"""The one error type fledge raises for anything the user can fix."""

from __future__ import annotations


class FledgeError(Exception):
    """A build, config or input problem; the message names the file, field or path and what
    to do about it. The CLI prints it on stderr and exits 1."""
