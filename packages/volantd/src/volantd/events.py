"""The event bus: every VM event is stored first, then handed to live subscribers.

Events carry the store's monotonic id, so a subscriber that reconnects with the last id it
saw (SSE ``Last-Event-ID``) gets what it missed from the store and then the live stream. A
subscriber too slow to keep up is not dropped silently, as upstream did: it falls back to
reading the store from its last id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from volantd.store import Database, EventRecord

QUEUE_SIZE = 256


class EventBus:
    """Publish from the event loop; subscribe with ``async for`` over :meth:`follow`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queues: set[asyncio.Queue[EventRecord | None]] = set()

    async def publish(
        self,
        type: str,
        vm_name: str | None = None,
        *,
        status: str | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> EventRecord:
        """Store the event and pass it to every subscriber."""
        record = await asyncio.to_thread(
            self.db.events.append, type, vm_name, status, message, data
        )
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(record)
        return record

    async def follow(self, after: int | None = None) -> AsyncIterator[EventRecord]:
        """Events after id ``after`` (None: only new ones), then live ones, in id order."""
        queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            last = after if after is not None else await asyncio.to_thread(self.db.events.last_id)
            while True:
                missed = await asyncio.to_thread(self.db.events.since, last, 500)
                for record in missed:
                    last = record.id
                    yield record
                if len(missed) == 500:
                    continue
                while True:
                    if queue.full():  # fell behind: read the rest from the store
                        while not queue.empty():
                            queue.get_nowait()
                        break
                    live = await queue.get()
                    if live is None:
                        return
                    if live.id > last:
                        last = live.id
                        yield live
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        """End every subscription (daemon shutdown)."""
        for queue in list(self._queues):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)
