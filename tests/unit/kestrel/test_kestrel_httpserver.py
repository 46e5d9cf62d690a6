"""The h11-based server, driven with raw bytes over real sockets: framing and edge cases."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from kestrel.httpserver import HTTPError, HTTPServer, Request, Response, json_response

Scenario = Callable[[int], Awaitable[object]]


async def handler(request: Request) -> Response:
    if request.path == "/echo":
        body = await request.body(1024)
        return Response(200, [("content-type", "text/plain")], body)
    if request.path == "/json":
        return json_response({"got": await request.json(), "query": request.query})
    if request.path == "/stream":
        return Response(200, [], _forever(request))
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    raise HTTPError(404, f"no such endpoint: {request.path}")


streams_closed: list[str] = []


async def _forever(request: Request) -> AsyncIterator[bytes]:
    try:
        yield b"first\n"
        await asyncio.sleep(3600)
        yield b"never\n"
    finally:
        streams_closed.append(request.path)


def serve(scenario: Scenario) -> object:
    async def main() -> object:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        reports: list[str] = []
        server = HTTPServer(handler, reports.append)
        await server.start([listener])
        try:
            return await asyncio.wait_for(scenario(port), 30)
        finally:
            await server.close()

    return asyncio.run(main())


async def exchange(port: int, raw: bytes, *, half_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    if half_close:
        writer.write_eof()
    data = await reader.read()
    writer.close()
    return data


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_keep_alive_and_pipelined_requests_on_one_connection() -> None:
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = serve(lambda port: exchange(port, raw))
    assert isinstance(data, bytes)
    assert data.count(b"HTTP/1.1 200") == 2 and data.count(b"HTTP/1.1 404") == 1
    assert b"\r\n\r\nabc" in data and b"\r\n\r\nde" in data
    assert b'{"error": "no such endpoint: /missing"}' in data


def test_malformed_request_gets_400_json_and_the_connection_closes() -> None:
    data = serve(lambda port: exchange(port, b"THIS IS NOT HTTP\r\n\r\n"))
    status, headers, body = split(data)  # type: ignore[arg-type]
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(body)["error"].startswith("bad HTTP request")


def test_oversized_head_gets_431() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    status, _, body = split(serve(lambda port: exchange(port, raw)))  # type: ignore[arg-type]
    assert status == 431 and "error" in json.loads(body)


def test_body_over_the_limit_is_refused_without_reading_it() -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n" + b"x" * 10
    status, _, body = split(serve(lambda port: exchange(port, raw)))  # type: ignore[arg-type]
    assert status == 413 and "1024 byte limit" in json.loads(body)["error"]


def test_invalid_json_and_query_parsing() -> None:
    raw = (
        b'POST /json?a=1&b=x%20y HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{"k": 1'
        b'POST /json?a=1&b=x%20y HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{"k": 1}'
    )
    data = serve(lambda port: exchange(port, raw))
    assert isinstance(data, bytes)
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"400") and b"not valid JSON" in first
    assert second.startswith(b"200")
    assert json.loads(second.partition(b"\r\n\r\n")[2]) == {
        "got": {"k": 1},
        "query": {"a": "1", "b": "x y"},
    }


def test_handler_exceptions_become_500_and_the_server_keeps_serving() -> None:
    raw = b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    data = serve(lambda port: exchange(port, raw))
    assert isinstance(data, bytes)
    assert b"HTTP/1.1 500" in data and b"handler bug" in data and b"HTTP/1.1 200" in data


def test_http10_and_head_requests() -> None:
    raw10 = b"GET /stream HTTP/1.0\r\n\r\n"
    raw_head = b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n"

    async def scenario(port: int) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw10)
        first = await reader.readuntil(b"first\n")
        writer.close()
        return first, await exchange(port, raw_head)

    result = serve(scenario)
    assert isinstance(result, tuple)
    streamed, head = result
    assert streamed.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in streamed.lower()
    status, headers, body = split(head)
    assert status == 200 and headers["content-length"] == "0" and body == b""


def test_expect_100_continue_is_honoured() -> None:
    async def scenario(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"data")
        final = await reader.readuntil(b"data")
        writer.close()
        return final

    assert b"200" in serve(scenario)  # type: ignore[operator]


def test_a_client_leaving_mid_stream_ends_the_stream() -> None:
    streams_closed.clear()

    async def scenario(port: int) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"first\n")
        writer.close()
        while not streams_closed:
            await asyncio.sleep(0.01)
        return list(streams_closed)

    assert serve(scenario) == ["/stream"]
