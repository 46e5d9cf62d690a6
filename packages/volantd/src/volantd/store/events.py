"""The persistent event log; event ids are the SSE event ids clients resume from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from volantd.store.schema import events, utc_now
from volantd.store.transactions import Transactions


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One event. Ids grow with every event and are never reused, not even after pruning."""

    id: int
    type: str
    vm_name: str | None
    status: str | None
    message: str
    data: dict[str, Any] | None
    created_at: datetime


class EventRepository:
    """Appends events and reads them back in order."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def append(
        self,
        type: str,
        vm_name: str | None = None,
        status: str | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> EventRecord:
        """Record an event; its id is greater than every id handed out before."""
        values: dict[str, Any] = {
            "type": type,
            "vm_name": vm_name,
            "status": status,
            "message": message,
            "data": data,
            "created_at": utc_now(),
        }
        with self._tx.write() as conn:
            event_id = conn.execute(
                events.insert().values(values).returning(events.c.id)
            ).scalar_one()
        return EventRecord(id=event_id, **values)

    def since(self, last_id: int, limit: int = 1000) -> list[EventRecord]:
        """Events after `last_id` (an SSE Last-Event-ID), oldest first, at most `limit`."""
        query = sa.select(events).where(events.c.id > last_id).order_by(events.c.id).limit(limit)
        with self._tx.read() as conn:
            return [EventRecord(**row._mapping) for row in conn.execute(query)]

    def for_vm(self, vm_name: str, limit: int = 100) -> list[EventRecord]:
        """The latest `limit` events of one VM, oldest first."""
        query = (
            sa.select(events)
            .where(events.c.vm_name == vm_name)
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        with self._tx.read() as conn:
            records = [EventRecord(**row._mapping) for row in conn.execute(query)]
        return records[::-1]

    def last_id(self) -> int:
        """The id of the newest event, 0 if none is stored."""
        with self._tx.read() as conn:
            return conn.scalar(sa.select(sa.func.max(events.c.id))) or 0

    def prune(self, keep_last: int) -> int:
        """Delete all but the newest `keep_last` events; returns how many went."""
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}")
        with self._tx.write() as conn:
            newest_doomed = conn.scalar(
                sa.select(events.c.id).order_by(events.c.id.desc()).offset(keep_last).limit(1)
            )
            if newest_doomed is None:
                return 0
            return conn.execute(events.delete().where(events.c.id <= newest_doomed)).rowcount
