"""The agent channel over vsock: how volantd reaches kestrel in a VM that has no NIC.

Two ways in, one per VMM:

- Cloud Hypervisor's *hybrid vsock*: the guest's vsock device is backed by a unix socket on
  the host. A host program connects to it, writes ``CONNECT <port>\\n`` and reads
  ``OK <host port>\\n``; from then on the stream is the guest's vsock port (Firecracker's
  protocol, which CH shares).
- QEMU's vhost-vsock (``/dev/vhost-vsock``): a plain ``AF_VSOCK`` connection to the guest's
  CID and port.

:class:`AgentForwarder` puts either behind a loopback TCP port, so everything that talks to
the agent over HTTP (exec, logs, files, the proxy, stop) works unchanged with the VM's
``agent_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from volantd.errors import VolantError

HANDSHAKE_TIMEOUT_S = 5.0
COPY_CHUNK = 64 * 1024

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[], Awaitable[Streams]]


class VsockError(VolantError):
    """The guest's vsock port could not be reached."""


async def connect_hybrid_vsock(
    socket_path: Path, port: int, timeout_s: float = HANDSHAKE_TIMEOUT_S
) -> Streams:
    """A stream to guest vsock `port` through Cloud Hypervisor's unix socket `socket_path`."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path)), timeout_s
        )
    except (OSError, TimeoutError) as error:
        raise VsockError(f"cannot open the VM's vsock socket {socket_path}: {error}") from None
    try:
        writer.write(f"CONNECT {port}\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), timeout_s)
    except (OSError, TimeoutError) as error:
        writer.close()
        raise VsockError(f"vsock port {port}: no answer to CONNECT ({error!r})") from None
    if not answer.startswith(b"OK "):
        writer.close()
        said = answer.decode(errors="replace").strip() or "nothing (connection closed)"
        raise VsockError(f"vsock port {port}: the VMM answered CONNECT with {said!r}")
    return reader, writer


async def connect_af_vsock(cid: int, port: int, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> Streams:
    """A stream to guest vsock `port` of the VM with context id `cid` (vhost-vsock)."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise VsockError("this Python has no AF_VSOCK")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        connecting = asyncio.get_running_loop().sock_connect(sock, (cid, port))
        await asyncio.wait_for(connecting, timeout_s)
    except (OSError, TimeoutError) as error:
        sock.close()
        raise VsockError(f"cannot reach vsock {cid}:{port}: {error!r}") from None
    return await asyncio.open_connection(sock=sock)


class AgentForwarder:
    """A loopback TCP port whose every connection is joined to a new guest vsock stream."""

    def __init__(self, connect: Connector, host: str = "127.0.0.1") -> None:
        self._connect = connect
        self.host = host
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the forwarder first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> int:
        """Listen on `port` (0: any free one); returns the port."""
        self._server = await asyncio.start_server(self._serve, self.host, port)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for link in list(self._links):
            link.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _serve(self, client: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            try:
                guest, guest_out = await self._connect()
            except VsockError:
                return  # the client sees its connection closed: the agent is unreachable
            try:
                await asyncio.gather(_copy(client, guest_out), _copy(guest, client_out))
            finally:
                guest_out.close()
        except asyncio.CancelledError:
            pass  # the forwarder is closing: end quietly (asyncio logs a cancelled handler)
        finally:
            client_out.close()
            self._links.discard(task)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until `source` ends, then half-close `sink` (HTTP clients may wait for EOF)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await source.read(COPY_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
