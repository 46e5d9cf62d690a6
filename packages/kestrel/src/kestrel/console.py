"""The serial console: machine-readable ``volant-event`` lines and kestrel's own messages.

Event lines follow docs/guest.md exactly: ``volant-event `` then one compact JSON object
with at least ``event`` and ``uptime_ms``. The workload's output never goes here.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .system import uptime_ms

EVENT_PREFIX = "volant-event "
LOG_PREFIX = "kestrel: "


class Console:
    """Writes whole lines to the console device (or a file, or stdout when not PID 1)."""

    def __init__(self, fd: int, *, owned: bool) -> None:
        self._fd = fd
        self._owned = owned
        self.shared_with_shell = False
        """A shell writes here too: start event lines on a fresh line (after its prompt)."""
        self.events: list[dict[str, Any]] = []
        """Every event emitted so far, in order (also served by ``GET /v1/info``)."""

    @classmethod
    def open(cls, path: str | None) -> Console:
        """Open ``path`` for writing; ``None`` or ``"-"`` means standard output."""
        if path in (None, "-"):
            return cls(1, owned=False)
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_CLOEXEC
        if not path.startswith("/dev/"):
            flags |= os.O_CREAT
        return cls(os.open(path, flags, 0o644), owned=True)

    def event(self, name: str, *, at_ms: int | None = None, **fields: Any) -> dict[str, Any]:
        """Emit ``volant-event {"event": name, "uptime_ms": N, **fields}`` and return it.

        ``uptime_ms`` is now, or ``at_ms`` for an event that happened before it could be told.
        """
        at = uptime_ms() if at_ms is None else at_ms
        record: dict[str, Any] = {"event": name, "uptime_ms": at, **fields}
        self.events.append(record)
        line = EVENT_PREFIX + json.dumps(record, separators=(",", ":")) + "\n"
        self._write("\n" + line if self.shared_with_shell else line)
        return record

    def log(self, message: str) -> None:
        """Write one human-readable line, prefixed ``kestrel: ``."""
        line = LOG_PREFIX + message.replace("\n", " ") + "\n"
        self._write("\n" + line if self.shared_with_shell else line)

    def _write(self, line: str) -> None:
        data = line.encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # a console that went away must not take the agent with it

    def close(self) -> None:
        """Close the console if this object opened it."""
        if self._owned:
            self._owned = False
            os.close(self._fd)
