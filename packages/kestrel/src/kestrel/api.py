"""The agent's HTTP API: routing and the mapping of agent errors to HTTP statuses.

=======  ========================  ===================================================
method   path                      what
=======  ========================  ===================================================
GET      /healthz                  ``{"status": "ok"}``
GET      /v1/info                  VM, workload state, restarts, network, boot timings
GET      /v1/logs                  workload output (``tail``, ``stream``, ``after``,
                                   ``follow=1`` streams NDJSON until the client leaves)
GET      /v1/logs/stream           the same as server-sent events (upstream volantd)
POST     /v1/exec                  run a command (``?stream=1``: NDJSON as it runs)
PUT/GET  /v1/files?path=           upload (``&mode=0644``) / download a file
POST     /v1/shutdown              202, then stop the workload, sync, power off
any      /v1/proxy/{path}          reverse proxy to the workload's ``base_url``
any      /v1/{other}               upstream's passthrough: the same as /v1/proxy/{other}
=======  ========================  ===================================================
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .config import Action
from .errors import KestrelError, SpawnError, UserLookupError
from .execute import CommandRun, ExecRequestError, collect, parse_exec_request, stream_lines
from .files import (
    FileDeniedError,
    FileMissingError,
    FileRequestError,
    check_path,
    file_chunks,
    open_download,
    parse_mode,
    receive_file,
)
from .httpserver import HTTPError, Request, Response, json_response
from .logs import LogLine, format_time
from .origin import Origin, parse_http_url
from .proxy import forward, join_path

if TYPE_CHECKING:
    from .agent import Agent

DEFAULT_LOG_TAIL = 1000
MAX_EXEC_BODY = 16 * 1024 * 1024
NDJSON = "application/x-ndjson"

Route = Callable[[Request], Awaitable[Response]]


def _ndjson(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _flag(request: Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes", "on")


class API:
    """Routes requests to the agent; every error answer is ``{"error": "..."}``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._routes: dict[str, dict[str, Route]] = {
            "/healthz": {"GET": self.healthz},
            "/v1/info": {"GET": self.info},
            "/v1/logs": {"GET": self.logs},
            "/v1/logs/stream": {"GET": self.logs_sse},
            "/v1/exec": {"POST": self.execute},
            "/v1/files": {"GET": self.download, "PUT": self.upload},
            "/v1/shutdown": {"POST": self.shutdown},
        }
        workload = agent.config.workload
        self._origin: Origin | None = None
        self._origin_error: str | None = None
        if workload is not None and workload.type == "http" and workload.base_url:
            try:
                self._origin = parse_http_url(workload.base_url)
            except ValueError:
                self._origin_error = (
                    f"the workload's base_url {workload.base_url!r} is not an http:// URL; "
                    "the agent proxies plain HTTP only"
                )
        self._actions = {(a.method, "/v1" + a.path.split("?")[0]): a for a in agent.config.actions}

    async def handle(self, request: Request) -> Response:
        path = request.path
        methods = self._routes.get(path)
        if methods is not None:
            route = methods.get(request.method)
            if route is None:
                allowed = ", ".join(sorted(methods))
                raise HTTPError(
                    405,
                    f"{request.method} is not allowed on {path} (use {allowed})",
                    [("allow", allowed)],
                )
            try:
                return await route(request)
            except FileMissingError as error:
                raise HTTPError(404, str(error)) from None
            except FileDeniedError as error:
                raise HTTPError(403, str(error)) from None
            except (FileRequestError, ExecRequestError, SpawnError, UserLookupError) as error:
                raise HTTPError(400, str(error)) from None
            except KestrelError as error:
                raise HTTPError(500, str(error)) from None
        if path == "/v1/proxy" or path.startswith("/v1/proxy/"):
            return await self.proxy(request, path.removeprefix("/v1/proxy"))
        if path == "/v1" or path.startswith("/v1/"):
            action = self._actions.get((request.method, path))
            return await self.proxy(request, path.removeprefix("/v1"), action)
        raise HTTPError(404, f"no such endpoint: {path} (see GET /v1/info and docs/kestrel.md)")

    # -- status -----------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def info(self, request: Request) -> Response:
        return json_response(self.agent.info())

    # -- logs -------------------------------------------------------------------------------

    def _log_query(self, request: Request) -> tuple[int | None, str | None, int | None]:
        tail_text = request.query.get("tail", "")
        if tail_text in ("", "all"):
            tail = None if tail_text == "all" else DEFAULT_LOG_TAIL
        elif tail_text.isdigit():
            tail = int(tail_text)
        else:
            raise HTTPError(400, f"tail must be a number of lines or 'all' (got {tail_text!r})")
        stream = request.query.get("stream") or None
        if stream not in (None, "stdout", "stderr"):
            raise HTTPError(400, f"stream must be stdout or stderr (got {stream!r})")
        after_text = request.query.get("after")
        if after_text is not None and not after_text.isdigit():
            raise HTTPError(400, f"after must be a line sequence number (got {after_text!r})")
        return tail, stream, int(after_text) if after_text is not None else None

    def _backlog(self, tail: int | None, stream: str | None, after: int | None) -> list[LogLine]:
        logs = self.agent.logs
        lines = logs.after(after, stream) if after is not None else logs.tail(None, stream)
        return lines if tail is None else lines[max(0, len(lines) - tail) :]

    async def logs(self, request: Request) -> Response:
        tail, stream, after = self._log_query(request)
        backlog = self._backlog(tail, stream, after)
        if not _flag(request, "follow"):
            return json_response(
                {
                    "lines": [line.as_dict() for line in backlog],
                    "last_seq": self.agent.logs.last_seq,
                    "dropped": self.agent.logs.dropped,
                }
            )
        start = backlog[0].seq - 1 if backlog else self.agent.logs.last_seq
        body = self._follow(start, stream, lambda line: _ndjson(line.as_dict()))
        return Response(200, [("content-type", NDJSON), ("cache-control", "no-store")], body)

    async def logs_sse(self, request: Request) -> Response:
        tail, stream, after = self._log_query(request)
        backlog = self._backlog(100 if "tail" not in request.query else tail, stream, after)
        start = backlog[0].seq - 1 if backlog else self.agent.logs.last_seq

        def event(line: LogLine) -> bytes:
            data = {
                "stream": line.stream,
                "line": line.text,
                "timestamp": format_time(line.time_ns),
            }
            return f"id: {line.seq}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        headers = [("content-type", "text/event-stream"), ("cache-control", "no-store")]
        return Response(200, headers, self._follow(start, stream, event))

    async def _follow(
        self, after: int, stream: str | None, encode: Callable[[LogLine], bytes]
    ) -> AsyncIterator[bytes]:
        logs = self.agent.logs
        seq = after
        while True:
            lines = logs.after(seq, None)
            if lines:
                seq = lines[-1].seq
                data = b"".join(encode(ln) for ln in lines if stream is None or ln.stream == stream)
                if data:
                    yield data
            elif not await logs.wait_beyond(seq):
                return

    # -- exec -------------------------------------------------------------------------------

    async def execute(self, request: Request) -> Response:
        spec = parse_exec_request(await request.json(MAX_EXEC_BODY))
        run = CommandRun(spec, self.agent.reaper)
        if _flag(request, "stream"):
            headers = [("content-type", NDJSON), ("cache-control", "no-store")]
            return Response(200, headers, stream_lines(run, _ndjson))
        return json_response(await collect(run))

    # -- files ------------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        path = check_path(request.query.get("path"))
        mode = parse_mode(request.query.get("mode"))
        written = await receive_file(path, mode, request.chunks())
        return json_response(written, 201 if written["created"] else 200)

    async def download(self, request: Request) -> Response:
        download = open_download(check_path(request.query.get("path")))
        headers = [
            ("content-type", "application/octet-stream"),
            ("x-file-mode", f"{download.mode:04o}"),
        ]
        if download.size is not None:
            headers.append(("content-length", str(download.size)))
        return Response(200, headers, file_chunks(download.file))

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self, request: Request) -> Response:
        response = json_response({"status": "shutting down"}, 202)
        response.after_sent = lambda: self.agent.request_shutdown("api")
        return response

    # -- proxy ------------------------------------------------------------------------------

    async def proxy(self, request: Request, rest: str, action: Action | None = None) -> Response:
        """Forward to ``base_url`` + ``rest``; a manifest action's path and deadline win."""
        origin = self._origin
        if self._origin_error is not None:
            raise HTTPError(502, self._origin_error)
        if origin is None:
            raise HTTPError(
                404,
                f"no such endpoint: {request.path}, and this VM has no http workload to pass "
                "/v1/... requests to",
            )
        target = join_path(origin.path, rest) if action is None else action.path
        if request.query_string:
            target += ("&" if "?" in target else "?") + request.query_string
        if not self.agent.workload_running():
            raise HTTPError(502, f"the workload is not running ({self.agent.workload_state()})")
        timeout = action.timeout_ms / 1000 if action is not None and action.timeout_ms else None
        return await forward(request, origin, target, timeout_s=timeout)
