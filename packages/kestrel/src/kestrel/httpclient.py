"""A minimal asyncio HTTP/1.1 client on h11, for the health probe and the reverse proxy.

One connection per request (``Connection: close``); request and response bodies stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import h11

from .errors import KestrelError
from .origin import Origin

READ_SIZE = 64 * 1024


class UpstreamError(KestrelError):
    """The upstream could not be reached or spoke broken HTTP."""


class UpstreamResponse:
    """Status and headers of an upstream response; the body streams from :meth:`chunks`."""

    def __init__(
        self,
        event: h11.Response,
        connection: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.status = event.status_code
        self.reason = event.reason.decode("latin-1", "replace")
        self.headers: list[tuple[str, str]] = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
        ]
        self._h11 = connection
        self._reader = reader
        self._writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The response body as it arrives; the connection is closed at the end."""
        try:
            while True:
                event = await _next_event(self._h11, self._reader)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return
                else:
                    raise UpstreamError("the upstream closed the connection mid-response")
        finally:
            await self.close()

    async def read(self, limit: int = 1024 * 1024) -> bytes:
        """The whole body, cut at ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        await self.close()
        return b"".join(parts)[:limit]

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as error:
            raise UpstreamError(f"the upstream sent invalid HTTP: {error}") from None
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await reader.read(READ_SIZE)
        except ConnectionError as error:
            raise UpstreamError(f"connection to the upstream failed: {error}") from None
        connection.receive_data(data)


async def send_request(
    origin: Origin,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | AsyncIterable[bytes] | None = None,
    *,
    connect_timeout: float = 5.0,
) -> UpstreamResponse:
    """Send one request to ``origin`` and return once the response head has arrived.

    A streamed ``body`` without a ``content-length`` header goes out chunked.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(origin.host, origin.port, limit=READ_SIZE), connect_timeout
        )
    except TimeoutError:
        raise UpstreamError(
            f"cannot connect to {origin.url}: no answer within {connect_timeout:g} s"
        ) from None
    except OSError as error:
        raise UpstreamError(f"cannot connect to {origin.url}: {error.strerror or error}") from None
    connection = h11.Connection(h11.CLIENT)
    try:
        head = [(k, v) for k, v in headers or [] if k.lower() not in ("host", "connection")]
        head = [("host", origin.authority), *head, ("connection", "close")]
        names = {k.lower() for k, _ in head}
        if isinstance(body, bytes) and "content-length" not in names:
            head.append(("content-length", str(len(body))))
        elif body is not None and not isinstance(body, bytes) and "content-length" not in names:
            head.append(("transfer-encoding", "chunked"))
        writer.write(connection.send(h11.Request(method=method, target=target, headers=head)))
        await _send_body(connection, writer, body)
        while True:
            event = await _next_event(connection, reader)
            if isinstance(event, h11.Response):
                return UpstreamResponse(event, connection, reader, writer)
            if not isinstance(event, h11.InformationalResponse):
                raise UpstreamError("the upstream closed the connection without a response")
    except BaseException:
        writer.close()
        raise


async def _send_body(
    connection: h11.Connection,
    writer: asyncio.StreamWriter,
    body: bytes | AsyncIterable[bytes] | None,
) -> None:
    try:
        if isinstance(body, bytes):
            if body:
                writer.write(connection.send(h11.Data(data=body)))
        elif body is not None:
            async for chunk in body:
                if chunk:
                    writer.write(connection.send(h11.Data(data=chunk)))
                    await writer.drain()
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()
    except h11.LocalProtocolError as error:
        raise UpstreamError(f"request body does not match its content-length: {error}") from None
    except ConnectionError:
        pass  # the upstream may answer (e.g. 413) before reading the whole body
