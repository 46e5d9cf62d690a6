"""Reading kestrel's ``volant-event`` lines from a VM's serial log as they appear."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

EVENT_PREFIX = b"volant-event "
INIT_STARTED = re.compile(rb"init: started at uptime (\d+)\.(\d{3}) s")


class ConsoleEvents:
    """Follows a serial log from an offset; :meth:`read` returns the events written since."""

    def __init__(self, log: Path, offset: int = 0) -> None:
        self.log = log
        self.offset = offset
        self._partial = b""

    @classmethod
    def from_end(cls, log: Path) -> ConsoleEvents:
        """Follow only what is written from now on."""
        try:
            return cls(log, log.stat().st_size)
        except FileNotFoundError:
            return cls(log)

    def read(self) -> list[dict[str, Any]]:
        """The complete event lines written since the last call (bad JSON is skipped), with
        the C init's ``started at uptime`` line as an ``init_started`` event."""
        try:
            with self.log.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            start = line.find(EVENT_PREFIX)
            if start < 0:
                init = INIT_STARTED.search(line)  # the C init's first line (docs/fledge.md)
                if init:
                    uptime = int(init.group(1)) * 1000 + int(init.group(2))
                    events.append({"event": "init_started", "uptime_ms": uptime})
                continue
            try:
                event = json.loads(line[start + len(EVENT_PREFIX) :].strip())
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("event"), str):
                events.append(event)
        return events
