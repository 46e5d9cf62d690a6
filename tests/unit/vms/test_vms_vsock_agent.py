"""A VM without a NIC (`isolated` on a VMM with vsock): the guest gets a vsock device and a
vm.json without a NIC, and volantd reaches its agent through a loopback port forwarded over
the VMM's hybrid-vsock socket — before and after a daemon restart.

A fake VMM stands in for Cloud Hypervisor (which needs a KVM host): on start it serves the
VM's vsock socket with the hybrid-vsock handshake and answers HTTP as kestrel would.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.manifests import add_agentless_plugin, bzimage
from volantd.events import EventBus
from volantd.hypervisors import (
    Accel,
    Capabilities,
    HypervisorDriver,
    LaunchSpec,
    VMProcess,
    VMState,
    VMStatus,
)
from volantd.kernels import KernelStore
from volantd.network import Networks, UserNetwork, VsockNetwork
from volantd.store import Database, open_database
from volantd.vms.orchestrator import CreateRequest, Orchestrator


class HybridVsockVMM(HypervisorDriver):
    """Runs nothing, but serves each VM's vsock socket like Cloud Hypervisor with kestrel
    listening on the guest port vm.json names."""

    name = "fake-ch"

    def __init__(self) -> None:
        self.specs: list[LaunchSpec] = []
        self.servers: dict[str, asyncio.Server] = {}
        self.connects: list[str] = []

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, available=True, vsock=True, hybrid_vsock=True)

    def guest_drivers(self, *, network: bool, disks: int = 0) -> tuple[str, ...]:
        return ()

    def prepare(self, spec: LaunchSpec) -> None:
        pass

    async def start(self, spec: LaunchSpec) -> VMProcess:
        self.specs.append(spec)
        assert spec.vsock is not None
        port = json.loads((spec.run_dir / "vm.json").read_text())["agent"]["vsock_port"]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = (await reader.readline()).decode()
            self.connects.append(line)
            if line != f"CONNECT {port}\n":
                writer.close()
                return
            writer.write(b"OK 1\n")
            await reader.readuntil(b"\r\n\r\n")
            body = json.dumps({"status": "ok", "vm": spec.name}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()

        self.servers[spec.name] = await asyncio.start_unix_server(serve, str(spec.vsock.socket))
        return VMProcess(spec.name, spec.run_dir, os.getpid(), os.getpid(), Accel.KVM)

    def detach(self, vm: VMProcess) -> None:
        pass

    async def stop(self, vm: VMProcess, timeout: float = 10.0) -> VMStatus:
        self.servers.pop(vm.name).close()
        return VMStatus(VMState.STOPPED)

    async def status(self, vm: VMProcess) -> VMStatus:
        return VMStatus(VMState.RUNNING if vm.name in self.servers else VMState.STOPPED)

    def alive(self, vm: VMProcess) -> bool:
        return vm.name in self.servers

    async def attach(self, name: str, run_dir: Path) -> VMProcess | None:
        if name not in self.servers:
            return None
        return VMProcess(name, run_dir, os.getpid(), os.getpid(), Accel.KVM)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "home" / "volant.db")
    add_agentless_plugin(
        database,
        tmp_path,
        "quiet",
        network={"mode": "isolated", "expose": [{"name": "http", "port": 80}]},
    )
    yield database
    database.close()


def test_a_nic_less_vm_is_reached_over_vsock_also_after_a_daemon_restart(
    tmp_path: Path, db: Database
) -> None:
    kernels = KernelStore(tmp_path / "kernels", tmp_path / "cache")
    (tmp_path / "bzImage").write_bytes(bzimage("6.9.0-test (t@h) #1 SMP"))
    kernels.import_kernel(tmp_path / "bzImage", make_default=True)
    vmm = HybridVsockVMM()

    def orchestrator(bus: EventBus) -> Orchestrator:
        networks = Networks([VsockNetwork(), UserNetwork(db)])
        return Orchestrator(db, kernels, vmm, bus, tmp_path / "run", tmp_path / "cache", networks)

    async def get(url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url)).json()

    async def main() -> None:
        bus = EventBus(db)
        first = orchestrator(bus)
        record = await first.create(CreateRequest(name="quiet-1", plugin="quiet"), wait="none")
        (spec,) = vmm.specs
        assert spec.vsock is not None and spec.vsock.cid == 3 + record.id
        assert spec.network is not None and spec.network.mode.value == "none"  # no NIC
        contract = json.loads((spec.run_dir / "vm.json").read_text())
        assert contract["network"]["mac"] is None and contract["agent"]["vsock_port"] == 8080
        assert record.agent_url == f"http://127.0.0.1:{record.agent_port}"
        assert db.ports.leases("quiet-1") == []  # nothing published without a NIC
        assert await get(f"{record.agent_url}/healthz") == {"status": "ok", "vm": "quiet-1"}
        await first.close()  # volantd exits; the VM runs on
        with pytest.raises(httpx.ConnectError):
            await get(f"{record.agent_url}/healthz")
        second = orchestrator(bus)
        await second.recover()
        adopted = second.get("quiet-1")
        assert adopted.status == "running" and adopted.agent_port == record.agent_port
        assert await get(f"{adopted.agent_url}/healthz") == {"status": "ok", "vm": "quiet-1"}
        await second.stop("quiet-1")
        with pytest.raises(httpx.ConnectError):
            await get(f"{adopted.agent_url}/healthz")
        await second.close()
        bus.close()

    asyncio.run(main())
    # two health checks, then the stop asked the agent to shut the guest down
    assert vmm.connects == ["CONNECT 8080\n"] * 3
