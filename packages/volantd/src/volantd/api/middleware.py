"""ASGI middleware: a request id on every response and log line, and the API key check.

Both are plain ASGI (not Starlette's ``BaseHTTPMiddleware``), so streamed responses (SSE,
proxied bodies, WebSockets) pass through untouched and are never buffered or cut.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
API_KEY_HEADER = "x-volant-api-key"  # upstream's header, still accepted
UNAUTHENTICATED_PATHS = frozenset({"/healthz"})
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
log = logging.getLogger("volantd.api")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestContext:
    """Gives each request an id (the client's ``X-Request-ID`` if sane), echoes it in the
    response headers and logs one line per request with its status and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER)
        rid = given if given and _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.monotonic()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.accept"):
                status = message.get("status", 101)
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %s %.1f ms",
                scope.get("method", "WS"),
                scope.get("path", ""),
                status or "-",
                (time.monotonic() - started) * 1000,
            )
            request_id.reset(token)


class ApiKeyCheck:
    """Refuses every request but ``/healthz`` without the API key (``Authorization: Bearer``
    or upstream's ``X-Volant-API-Key``), compared in constant time."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in UNAUTHENTICATED_PATHS:
            await self.app(scope, receive, send)
            return
        if self._authorised(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "API key required"})
            return
        from volantd.api.errors import error_body

        body = error_body(
            "missing or wrong API key: send 'Authorization: Bearer <key>'", request_id.get()
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="volantd"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: Scope) -> bool:
        offered = _header(scope, API_KEY_HEADER)
        authorization = _header(scope, "authorization")
        if authorization and authorization[:7].lower() == "bearer ":
            offered = authorization[7:].strip()
        return offered is not None and hmac.compare_digest(offered.encode(), self._key)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return str(value.decode("latin-1"))
    return None
