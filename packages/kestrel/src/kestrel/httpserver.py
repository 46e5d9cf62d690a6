"""A small asyncio HTTP/1.1 server on h11: keep-alive, streamed bodies in both directions.

Handlers are ``async def handler(request) -> Response``. A response body is ``bytes`` or an
async iterator of ``bytes`` (sent chunked to HTTP/1.1 clients). While a streamed body is
being sent the server watches the client, and stops the stream (closing the iterator, so
its ``finally`` runs) as soon as the client disconnects. Protocol errors and handler
failures become JSON errors; nothing a client sends can take the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import h11

from . import __version__

MAX_HEAD_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 300.0
"""How long a keep-alive connection may sit idle between requests."""
DRAIN_LIMIT = 1024 * 1024
"""Unread request body a handler may leave behind and still keep the connection."""
READ_SIZE = 64 * 1024
SERVER_HEADER = f"kestrel/{__version__}"

Headers = Iterable[tuple[str, str]]
Body = bytes | AsyncIterable[bytes]
Handler = Callable[["Request"], Awaitable["Response"]]


class HTTPError(Exception):
    """Raised by handlers: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class Response:
    """Status, headers and a body of bytes or an async iterator of bytes.

    ``after_sent`` runs once the whole response has been written (e.g. to shut down).
    """

    def __init__(
        self,
        status: int = 200,
        headers: Headers = (),
        body: Body = b"",
        *,
        after_sent: Callable[[], object] | None = None,
    ) -> None:
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.after_sent = after_sent


def json_response(data: Any, status: int = 200, headers: Headers = ()) -> Response:
    """A JSON body (UTF-8, newline-terminated)."""
    body = (json.dumps(data, ensure_ascii=False) + "\n").encode()
    return Response(status, [("content-type", "application/json"), *headers], body)


def error_response(status: int, message: str, headers: Headers = ()) -> Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status, headers)


class Request:
    """One request: method, target, headers; the body is read on demand (once)."""

    def __init__(
        self,
        connection: _Connection,
        event: h11.Request,
        client: str,
    ) -> None:
        self._connection = connection
        self.method = event.method.decode("ascii", "replace").upper()
        self.target = event.target.decode("ascii", "replace")
        self.path, _, self.query_string = self.target.partition("?")
        self.headers: list[tuple[str, str]] = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
        ]
        self.http_version = event.http_version.decode("ascii", "replace")
        self.client = client
        self.body_started = False
        self._query: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (percent-decoded; the last value wins)."""
        if self._query is None:
            self._query = dict(parse_qsl(self.query_string, keep_blank_values=True))
        return self._query

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def has_body(self) -> bool:
        return self.content_length not in (None, 0) or self.header("transfer-encoding") is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The request body as it arrives (may be iterated once)."""
        if self.body_started:
            raise RuntimeError("the request body was already read")
        self.body_started = True
        async for chunk in self._connection.body_chunks():
            yield chunk

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 when longer than ``limit`` bytes."""
        length = self.content_length
        if length is not None and length > limit:
            raise HTTPError(413, f"request body of {length} bytes exceeds the {limit} byte limit")
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body exceeds the {limit} byte limit")
            parts.append(chunk)
        return b"".join(parts)

    async def json(self, limit: int = 1024 * 1024) -> Any:
        """The body decoded as JSON; 400 with the parser's reason when it is not."""
        raw = await self.body(limit)
        if not raw.strip():
            raise HTTPError(400, "request body must be a JSON object, got an empty body")
        try:
            return json.loads(raw)
        except ValueError as error:
            raise HTTPError(400, f"request body is not valid JSON: {error}") from None


class _ClientGone(Exception):
    pass


class _Connection:
    """One client connection: reads requests, runs the handler, writes responses."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler,
        report: Callable[[str], object],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.report = report
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "local"

    async def serve(self) -> None:
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self._next_event(), IDLE_TIMEOUT_S)
                except TimeoutError:
                    return
                if not isinstance(event, h11.Request):
                    return
                if not await self._exchange(event):
                    return
                try:
                    self.h11.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except h11.RemoteProtocolError as error:
            await self._protocol_error(error)
        except (_ClientGone, ConnectionError):
            pass
        except Exception as error:  # e.g. a response h11 refuses to send: drop the connection
            self.report(f"HTTP connection from {self.client} failed: {error!r}")
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.reader.read(READ_SIZE)
            except ConnectionError:
                data = b""
            self.h11.receive_data(data)

    async def body_chunks(self) -> AsyncIterator[bytes]:
        if self.h11.they_are_waiting_for_100_continue:
            await self._write(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise _ClientGone()

    async def _exchange(self, event: h11.Request) -> bool:
        """Handle one request; True when the connection can carry another."""
        request = Request(self, event, self.client)
        try:
            response = await self.handler(request)
        except HTTPError as error:
            response = error_response(error.status, error.message, error.headers)
        except (_ClientGone, ConnectionError, h11.RemoteProtocolError):
            raise
        except Exception as error:  # a handler bug must not end the agent
            self.report(f"HTTP {request.method} {request.path} failed: {error!r}")
            response = error_response(500, f"internal error: {error}")
        await self._send(request, response)
        if response.after_sent is not None:
            response.after_sent()
        return await self._finish_request_body(request)

    async def _finish_request_body(self, request: Request) -> bool:
        """Read what is left of the request body; True when the connection can be reused."""
        return await self._drain_request_body(request) and self.h11.our_state is h11.DONE

    async def _drain_request_body(self, request: Request) -> bool:
        """Read and drop the rest of the request body (up to a limit); True when all read."""
        if (
            self.h11.their_state is h11.SEND_BODY
            and not request.body_started
            and (request.header("expect") or "").lower() == "100-continue"
        ):
            return False  # answered without reading: the client will not send the body
        drained = 0
        while self.h11.their_state is h11.SEND_BODY:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                drained += len(event.data)
                if drained > DRAIN_LIMIT:
                    return False
            elif not isinstance(event, h11.EndOfMessage):
                return False
        return self.h11.their_state is h11.DONE

    async def _send(self, request: Request, response: Response) -> None:
        headers = [(k.lower(), v) for k, v in response.headers]
        names = {k for k, _ in headers}
        if "server" not in names:
            headers.append(("server", SERVER_HEADER))
        body = response.body
        bodyless = request.method == "HEAD" or response.status in (204, 304)
        if (
            isinstance(body, bytes | bytearray)
            and "content-length" not in names
            and response.status not in (204, 304)
        ):
            headers.append(("content-length", str(len(body))))
        await self._write(h11.Response(status_code=response.status, headers=headers))
        if isinstance(body, bytes | bytearray):
            if body and not bodyless:
                await self._write(h11.Data(data=body))
            await self._write(h11.EndOfMessage())
            return
        if bodyless:
            await _close_iterator(body)
            await self._write(h11.EndOfMessage())
            return
        await self._stream(request, body)

    async def _stream(self, request: Request, body: AsyncIterable[bytes]) -> None:
        """Send a streamed body, stopping it when the client goes away."""
        watcher = None
        if not request.body_started and self.h11.their_state is h11.SEND_BODY:
            await self._drain_request_body(request)
        if self.h11.their_state is h11.DONE:  # the request is read: anything more is EOF
            watcher = asyncio.ensure_future(self._wait_client_gone())
        sender = asyncio.ensure_future(self._send_chunks(body))
        try:
            if watcher is None:
                await sender
                return
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
                raise _ClientGone()
            sender.result()
        finally:
            for task in (sender, watcher):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _send_chunks(self, body: AsyncIterable[bytes]) -> None:
        iterator = aiter(body)
        try:
            async for chunk in iterator:
                if chunk:
                    await self._write(h11.Data(data=chunk))
        except (ConnectionError, _ClientGone):
            raise
        except Exception as error:  # the response has started: all we can do is cut it
            self.report(f"streamed response failed: {error!r}")
            raise _ClientGone() from error
        finally:
            await _close_iterator(iterator)
        await self._write(h11.EndOfMessage())

    async def _wait_client_gone(self) -> None:
        received = 0
        while True:
            try:
                data = await self.reader.read(READ_SIZE)
            except ConnectionError:
                return
            if not data:
                return
            received += len(data)
            if received > DRAIN_LIMIT:
                return
            self.h11.receive_data(data)  # a pipelined request: kept for the next cycle

    async def _write(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _protocol_error(self, error: h11.RemoteProtocolError) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status = error.error_status_hint if 400 <= error.error_status_hint < 600 else 400
        body = (json.dumps({"error": f"bad HTTP request: {error}"}) + "\n").encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
            ("server", SERVER_HEADER),
        ]
        with contextlib.suppress(Exception):
            await self._write(h11.Response(status_code=status, headers=headers))
            await self._write(h11.Data(data=body))
            await self._write(h11.EndOfMessage())


async def _close_iterator(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


class HTTPServer:
    """Serves ``handler`` on already-bound listening sockets; ``close()`` ends every connection."""

    def __init__(self, handler: Handler, report: Callable[[str], object]) -> None:
        self._handler = handler
        self._report = report
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            server = await asyncio.start_server(self._serve, sock=sock, limit=READ_SIZE)
            self._servers.append(server)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await _Connection(reader, writer, self._handler, self._report).serve()
        finally:
            self._connections.discard(task)

    async def close(self) -> None:
        """Stop listening and end open connections (log followers, streams)."""
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
