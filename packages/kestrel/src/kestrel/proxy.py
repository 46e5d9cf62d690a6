"""Reverse-proxying a request to the workload with streaming request and response bodies.

Hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``,
``Transfer-Encoding``, ``Upgrade``, ``TE``, ``Trailer``, ``Proxy-*``) are not forwarded in
either direction; ``Host`` is the workload's; ``X-Forwarded-For/-Host/-Proto`` are added.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .httpclient import UpstreamError, UpstreamResponse, send_request
from .httpserver import HTTPError, Request, Response
from .origin import Origin

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def join_path(base: str, rest: str) -> str:
    """``rest`` under the base path of ``base_url`` (``/api`` + ``/users`` → ``/api/users``)."""
    base_path = base.split("?", 1)[0]
    if not rest:
        return base_path or "/"
    return base_path.rstrip("/") + "/" + rest.lstrip("/")


def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop headers (including those named by ``Connection``)."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP and n.lower() not in named]


async def forward(
    request: Request, origin: Origin, target: str, *, timeout_s: float | None = None
) -> Response:
    """Send ``request`` to ``origin`` at ``target`` and stream the answer back.

    502 when the workload cannot be reached; 504 when ``timeout_s`` passes before the
    response head arrives.
    """
    if (request.header("upgrade") or "") != "":
        raise HTTPError(501, "protocol upgrades (WebSocket) are not supported by the agent proxy")
    headers = [(n, v) for n, v in end_to_end(request.headers) if n.lower() != "host"]
    chain = request.header("x-forwarded-for")
    headers = [(n, v) for n, v in headers if n.lower() != "x-forwarded-for"]
    headers.append(("x-forwarded-for", f"{chain}, {request.client}" if chain else request.client))
    if request.header("host") and not request.header("x-forwarded-host"):
        headers.append(("x-forwarded-host", request.header("host") or ""))
    if not request.header("x-forwarded-proto"):
        headers.append(("x-forwarded-proto", "http"))
    body = request.chunks() if request.has_body else None
    try:
        async with asyncio.timeout(timeout_s):
            upstream = await send_request(origin, request.method, target, headers, body)
    except TimeoutError:
        raise HTTPError(
            504, f"the workload did not answer within {timeout_s:g} s ({origin.url})"
        ) from None
    except UpstreamError as error:
        raise HTTPError(502, f"workload unreachable: {error}") from None
    return Response(upstream.status, end_to_end(upstream.headers), _relay(upstream))


async def _relay(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.chunks():
            yield chunk
    finally:
        await upstream.close()
