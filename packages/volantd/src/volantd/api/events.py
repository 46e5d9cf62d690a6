"""``GET /api/v1/events/vms``: the VM event stream (Server-Sent Events) with resume.

Each event is ``id: <store id>``, ``event: <TYPE>``, ``data: <json>``; a client that
reconnects with ``Last-Event-ID`` (or ``?since=``) gets what it missed from the store first.
A comment line every 15 s keeps proxies from closing a quiet stream; nothing cuts it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette.sse import EventSourceResponse

from volantd.store import EventRecord

router = APIRouter(prefix="/api/v1/events", tags=["events"])


def event_view(record: EventRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "type": record.type,
        "name": record.vm_name,
        "status": record.status,
        "message": record.message,
        "data": record.data,
        "timestamp": record.created_at.isoformat(),
    }


@router.get("/vms")
async def vm_events(
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
    since: Annotated[
        int | None, Query(ge=0, le=2**62, description="replay events after this id")
    ] = None,
    vm: Annotated[str | None, Query(description="only this VM's events")] = None,
) -> EventSourceResponse:
    """Stream VM events as they happen (after ``since`` / ``Last-Event-ID``, replayed)."""
    after = since
    if last_event_id and last_event_id.isdigit() and len(last_event_id) < 19:
        after = int(last_event_id)
    bus = request.app.state.services.bus

    async def stream() -> AsyncIterator[dict[str, str]]:
        async for record in bus.follow(after):
            if vm is not None and record.vm_name != vm:
                continue
            yield {
                "id": str(record.id),
                "event": record.type,
                "data": json.dumps(event_view(record)),
            }

    return EventSourceResponse(stream(), ping=15)
