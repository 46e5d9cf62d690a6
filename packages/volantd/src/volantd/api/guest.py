"""Reaching a VM's guest: its agent, its workload, its actions, logs, serial log and console.

Requests to the agent travel through the VM's loopback forward (user/isolated networking).
Bodies stream both ways, and nothing here has a write timeout, so a log follow, an exec
stream or a long download lasts as long as it lasts (upstream cut everything at 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from volantd.api.errors import APIError, Conflict, NotFound
from volantd.errors import VolantError
from volantd.registry import OPENAPI_MAX_BYTES, RegistryError, fetch_document
from volantd.store import VMRecord
from volantd.vms import states

router = APIRouter(tags=["guests"])

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
        "authorization", "x-volant-api-key",
    }
)  # fmt: skip
SERIAL_TAIL_BYTES = 64 * 1024


def _vm(request: Request | WebSocket, name: str) -> VMRecord:
    record: VMRecord = request.app.state.services.db.vms.get(name)
    return record


def _agent_url(record: VMRecord) -> str:
    url = record.agent_url
    if record.status not in (states.RUNNING, states.STARTING) or url is None:
        raise Conflict(f"vm {record.name!r} is {record.status}: its agent is not reachable")
    return url


def _client(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.http
    return client


async def forward(
    request: Request, record: VMRecord, path: str, *, method: str | None = None,
    timeout_s: float | None = None,
) -> Response:  # fmt: skip
    """Send ``request`` to the VM's agent at ``path`` and stream the answer back."""
    url = _agent_url(record) + path
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
    body = request.stream() if request.method not in ("GET", "HEAD") else None
    outgoing = _client(request).build_request(
        method or request.method, url, params=request.query_params, headers=headers,
        content=body, timeout=httpx.Timeout(5.0, read=timeout_s, write=None, pool=5.0),
    )  # fmt: skip
    try:
        upstream = await _client(request).send(outgoing, stream=True)
    except httpx.TimeoutException:
        raise APIError(f"the agent of vm {record.name!r} did not answer in time", 504) from None
    except httpx.HTTPError as error:
        raise APIError(f"cannot reach the agent of vm {record.name!r}: {error}", 502) from None
    kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=kept,
        background=BackgroundTask(upstream.aclose),
    )


PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@router.api_route("/api/v1/vms/{name}/agent/{path:path}", methods=PROXY_METHODS)
async def agent_proxy(request: Request, name: str, path: str) -> Response:
    """Any request to the VM's agent (kestrel's API: ``/healthz``, ``/v1/info``, ...)."""
    return await forward(request, _vm(request, name), "/" + path)


@router.api_route("/api/v1/vms/{name}/proxy/{path:path}", methods=PROXY_METHODS)
async def workload_proxy(request: Request, name: str, path: str) -> Response:
    """Any request to the VM's workload, through kestrel's reverse proxy."""
    return await forward(request, _vm(request, name), "/v1/proxy/" + path)


@router.post("/api/v1/vms/{name}/exec")
async def exec_in_vm(request: Request, name: str) -> Response:
    """Run a command in the guest (kestrel's ``POST /v1/exec``; ``?stream=1`` streams NDJSON)."""
    return await forward(request, _vm(request, name), "/v1/exec")


@router.api_route("/api/v1/vms/{name}/files", methods=["GET", "PUT"])
async def vm_files(request: Request, name: str) -> Response:
    """Download (GET) or upload (PUT) a guest file: ``?path=/etc/hostname``."""
    return await forward(request, _vm(request, name), "/v1/files")


@router.get("/api/v1/vms/{name}/logs")
async def vm_logs(request: Request, name: str) -> Response:
    """The workload's output from kestrel (``?tail=N``, ``?follow=true`` streams)."""
    return await forward(request, _vm(request, name), "/v1/logs")


@router.post("/api/v1/vms/{name}/actions/{plugin}/{action}")
async def vm_action(request: Request, name: str, plugin: str, action: str) -> Response:
    """Invoke a manifest action: its method and path go to the workload with its deadline."""
    record = _vm(request, name)
    if plugin != record.plugin:
        raise NotFound(f"vm {name!r} runs plugin {record.plugin!r}, not {plugin!r}")
    config = request.app.state.services.db.vms.config(name).config
    actions: dict[str, Any] = config["manifest"].get("actions") or {}
    if action not in actions:
        known = ", ".join(sorted(actions)) or "none"
        raise NotFound(f"plugin {plugin!r} has no action {action!r} (actions: {known})")
    spec = actions[action]
    timeout = spec["timeout_ms"] / 1000 if spec.get("timeout_ms") else None
    return await forward(request, record, "/v1" + spec["path"], method=spec["method"],
                         timeout_s=timeout)  # fmt: skip


@router.get("/api/v1/vms/{name}/openapi")
async def workload_openapi(request: Request, name: str) -> Response:
    """The workload's OpenAPI document: from the running workload (``/openapi`` through
    kestrel), else from the manifest's ``openapi``: a URL is fetched, a file was kept in the
    cache when the plugin was installed (volantd never reads host files on request)."""
    record = _vm(request, name)
    if record.status == states.RUNNING and record.agent_port:
        with contextlib.suppress(httpx.HTTPError):
            live = await _client(request).get(f"{record.agent_url}/v1/openapi", timeout=10)
            if live.status_code == 200:
                return _document(live.content)
    config = request.app.state.services.db.vms.config(name).config
    manifest = config["manifest"]
    reference = manifest.get("openapi")
    if not reference:
        raise NotFound(f"plugin {record.plugin!r} publishes no OpenAPI document")
    if reference.startswith(("http://", "https://")):
        try:
            fetched = await fetch_document(
                reference, "the OpenAPI document", max_bytes=OPENAPI_MAX_BYTES, timeout_s=10
            )
        except RegistryError as error:
            raise APIError(str(error), 502) from None
        return _document(fetched)
    db = request.app.state.services.db
    try:
        cached = db.artifacts.get(record.plugin, manifest["version"], "openapi")
    except VolantError:
        raise NotFound(f"the OpenAPI document of plugin {record.plugin!r} is not cached") from None
    return _document(cached.cache_path.read_bytes())


def _document(content: bytes) -> Response:
    """JSON or YAML, told apart by the first non-blank character."""
    looks_json = content.lstrip()[:1] in (b"{", b"[")
    media = "application/json" if looks_json else "application/yaml"
    return Response(content, media_type=media)


@router.get("/api/v1/vms/{name}/serial")
async def serial_log(
    request: Request,
    name: str,
    follow: bool = False,
    tail: Annotated[int, Query(ge=0, le=16 * 1024 * 1024)] = SERIAL_TAIL_BYTES,
) -> Response:
    """The serial console's output as text: the last ``tail`` bytes, then (``follow``) more."""
    record = _vm(request, name)
    log = record.run_dir / "serial.log"
    if not follow:
        return Response(_tail(log, tail), media_type="text/plain; charset=utf-8")
    return StreamingResponse(_follow(request, log, tail), media_type="text/plain; charset=utf-8")


def _tail(log: Path, size: int) -> bytes:
    try:
        with log.open("rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - size))
            return file.read()
    except FileNotFoundError:
        return b""


async def _follow(request: Request, log: Path, size: int) -> AsyncIterator[bytes]:
    data = _tail(log, size)
    yield data
    offset = log.stat().st_size if log.exists() else 0
    while not await request.is_disconnected():
        try:
            with log.open("rb") as file:
                file.seek(offset)
                chunk = file.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            yield chunk
        else:
            await asyncio.sleep(0.2)


@router.websocket("/ws/v1/vms/{name}/console")
async def console(websocket: WebSocket, name: str) -> None:
    """The serial console, both ways: guest output as binary frames, input from any frame.

    One session per VM (the VMM's console socket takes one client): a second is refused with
    close code 4409 instead of being left connected and silent.
    """
    db = websocket.app.state.services.db
    record = db.vms.find(name)
    if record is None:
        await _refuse(websocket, 4404, f"vm {name!r} not found")
        return
    socket_path = record.run_dir / "console.sock"
    if record.status not in states.ACTIVE or not socket_path.exists():
        await _refuse(websocket, 4409, f"vm {name!r} is {record.status}")
        return
    sessions: set[str] = websocket.app.state.console_sessions
    if name in sessions:
        await _refuse(websocket, 4409, f"the console of vm {name!r} is already in use")
        return
    sessions.add(name)
    try:
        await _pipe_console(websocket, socket_path)
    finally:
        sessions.discard(name)


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code`` and ``reason``: a close before accepting reaches the
    client as a bare HTTP 403, without the reason."""
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


async def _pipe_console(websocket: WebSocket, socket_path: Path) -> None:
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
    except OSError as error:
        await websocket.close(code=1011, reason=f"console unavailable: {error.strerror}")
        return
    await websocket.accept()

    async def guest_to_client() -> None:
        while data := await reader.read(4096):
            await websocket.send_bytes(data)

    async def client_to_guest() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.ensure_future(guest_to_client()), asyncio.ensure_future(client_to_guest())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await websocket.close()
