"""The agent channel over Cloud Hypervisor's hybrid vsock, against a real unix-socket peer
that speaks the VMM's side of the protocol (`CONNECT <port>` → `OK <n>`) and then serves
HTTP as kestrel would. (A real guest needs Cloud Hypervisor on a KVM host: the contract test
in tests/vm/test_cloud_hypervisor_boot.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from volantd.network.vsock import AgentForwarder, VsockError, connect_hybrid_vsock


class FakeHybridVsock:
    """The host end of a VM's vsock device: accepts `CONNECT <port>` for `ports`."""

    def __init__(self, path: Path, ports: set[int]) -> None:
        self.path = path
        self.ports = ports
        self.requests: list[str] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode()
        self.requests.append(line)
        verb, _, port = line.strip().partition(" ")
        if verb != "CONNECT" or not port.isdigit() or int(port) not in self.ports:
            writer.close()  # CH closes the connection for a port nobody listens on
            return
        writer.write(b"OK 1073741824\n")
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ")[1].decode()
        body = f"kestrel on vsock port {port}, you asked for {path}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(body), body))  # fmt: skip
        await writer.drain()
        writer.close()


def with_vmm(tmp_path: Path, body: Callable[[FakeHybridVsock], Awaitable[None]]) -> None:
    """Run `body` while a fake VMM serves the VM's vsock socket (ports: 8080)."""

    async def main() -> None:
        fake = FakeHybridVsock(tmp_path / "vsock.sock", {8080})
        server = await asyncio.start_unix_server(fake.serve, str(fake.path))
        async with server:
            await body(fake)

    asyncio.run(main())


def test_the_handshake_opens_a_stream_to_the_guest_port(tmp_path: Path) -> None:
    async def body(vmm: FakeHybridVsock) -> None:
        reader, writer = await connect_hybrid_vsock(vmm.path, 8080)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        answer = await reader.read()
        assert b"200 OK" in answer
        assert b"kestrel on vsock port 8080, you asked for /healthz" in answer
        assert vmm.requests == ["CONNECT 8080\n"]

    with_vmm(tmp_path, body)


def test_a_refused_port_and_a_missing_socket_are_named(tmp_path: Path) -> None:
    async def body(vmm: FakeHybridVsock) -> None:
        refused = r"vsock port 9999: the VMM answered CONNECT with 'nothing \(connection closed\)'"
        with pytest.raises(VsockError, match=refused):
            await connect_hybrid_vsock(vmm.path, 9999)
        with pytest.raises(VsockError, match=r"cannot open the VM's vsock socket .*gone.sock"):
            await connect_hybrid_vsock(tmp_path / "gone.sock", 8080)

    with_vmm(tmp_path, body)


def test_the_forwarder_makes_the_agent_an_http_url(tmp_path: Path) -> None:
    async def body(vmm: FakeHybridVsock) -> None:
        forwarder = AgentForwarder(lambda: connect_hybrid_vsock(vmm.path, 8080))
        port = await forwarder.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                answers = await asyncio.gather(*(client.get(f"/v1/{n}") for n in range(3)))
            assert [answer.text for answer in answers] == [
                f"kestrel on vsock port 8080, you asked for /v1/{n}" for n in range(3)
            ]
            assert vmm.requests == ["CONNECT 8080\n"] * 3  # one vsock stream per connection
        finally:
            await forwarder.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)  # closed with the forwarder

    with_vmm(tmp_path, body)


def test_an_unreachable_agent_closes_the_clients_connection(tmp_path: Path) -> None:
    async def main() -> None:
        forwarder = AgentForwarder(lambda: connect_hybrid_vsock(tmp_path / "gone.sock", 8080))
        port = await forwarder.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    await client.get("/healthz")
        finally:
            await forwarder.close()

    asyncio.run(main())
