"""The orchestrator runs each VM under the hypervisor its config (or the host default) names,
and refuses at once a VM whose hypervisor cannot run it here.

Booting is not what is tested: the drivers are stand-ins that run nothing, except the real
Cloud Hypervisor driver where only its availability is asked (with a fake `cloud-hypervisor`
binary and a file standing in for /dev/kvm).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.ch import fake_binary
from support.manifests import add_agentless_plugin, bzimage
from volantd.events import EventBus
from volantd.hypervisors import (
    Accel,
    Capabilities,
    CloudHypervisorDriver,
    HypervisorDriver,
    LaunchSpec,
    VMProcess,
    VMState,
    VMStatus,
)
from volantd.kernels import KernelStore
from volantd.settings import Settings, SettingsError
from volantd.store import Database, open_database
from volantd.vms.hypervisors import HypervisorUnavailableError, UnsupportedByHypervisorError
from volantd.vms.orchestrator import CreateRequest, Orchestrator
from volantd.vms.states import RUNNING, STOPPED


class StandIn(HypervisorDriver):
    """A VMM that runs nothing and remembers what it was asked to do."""

    def __init__(self, name: str, user_networking: bool = True) -> None:
        self.name = name
        self.user_networking = user_networking
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.attached: list[str] = []
        self.up: set[str] = set()

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, True, user_networking=self.user_networking)

    def guest_drivers(self, *, network: bool, disks: int = 0) -> tuple[str, ...]:
        return ()

    def prepare(self, spec: LaunchSpec) -> None:
        pass

    async def start(self, spec: LaunchSpec) -> VMProcess:
        self.started.append(spec.name)
        self.up.add(spec.name)
        return VMProcess(spec.name, spec.run_dir, os.getpid(), os.getpid(), Accel.KVM)

    def detach(self, vm: VMProcess) -> None:
        pass

    async def stop(self, vm: VMProcess, timeout: float = 10.0) -> VMStatus:
        self.stopped.append(vm.name)
        self.up.discard(vm.name)
        return VMStatus(VMState.STOPPED)

    async def status(self, vm: VMProcess) -> VMStatus:
        return VMStatus(VMState.RUNNING if vm.name in self.up else VMState.STOPPED)

    def alive(self, vm: VMProcess) -> bool:
        return vm.name in self.up

    async def attach(self, name: str, run_dir: Path) -> VMProcess | None:
        self.attached.append(name)
        return (
            VMProcess(name, run_dir, os.getpid(), os.getpid(), Accel.KVM)
            if name in self.up
            else None
        )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "home" / "volant.db")
    add_agentless_plugin(database, tmp_path, "tiny")
    yield database
    database.close()


Scenario = Callable[[Orchestrator], Awaitable[Any]]


@pytest.fixture
def run(tmp_path: Path, db: Database) -> Callable[..., Any]:
    """Run `scenario` against an orchestrator whose default driver is `default`."""
    kernels = KernelStore(tmp_path / "kernels", tmp_path / "cache")
    (tmp_path / "bzImage").write_bytes(bzimage("6.9.0-test (t@h) #1 SMP"))
    kernels.import_kernel(tmp_path / "bzImage", make_default=True)

    def run(default: HypervisorDriver, others: list[HypervisorDriver], scenario: Scenario) -> Any:
        async def main() -> Any:
            bus = EventBus(db)
            vms = Orchestrator(db, kernels, default, bus, tmp_path / "run", tmp_path / "cache",
                               drivers=others)  # fmt: skip
            try:
                return await scenario(vms)
            finally:
                await vms.close()
                bus.close()

        return asyncio.run(main())

    return run


@pytest.fixture
def ch_available(tmp_path: Path) -> CloudHypervisorDriver:
    """The real driver, available: a fake binary, /dev/kvm trusted (a file that opens)."""
    kvm = tmp_path / "kvm"
    kvm.touch()
    return CloudHypervisorDriver(str(fake_binary(tmp_path)), tmp_path / "cache", "kvm", kvm)


def create(name: str, **config: Any) -> CreateRequest:
    return CreateRequest(name=name, plugin="tiny", config=config or None)


def test_a_vm_runs_under_the_hypervisor_its_config_names(run, db) -> None:
    qemu, ch = StandIn("qemu"), StandIn("cloud-hypervisor")

    async def scenario(vms: Orchestrator) -> None:
        default = await vms.create(create("plain"), wait="none")
        chosen = await vms.create(create("chosen", hypervisor="ch"), wait="none")
        assert (default.hypervisor, chosen.hypervisor) == ("qemu", "cloud-hypervisor")
        assert (qemu.started, ch.started) == (["plain"], ["chosen"])
        assert db.vms.get("chosen").status == RUNNING
        await vms.stop("chosen")
        assert (qemu.stopped, ch.stopped) == ([], ["chosen"])
        assert db.vms.get("chosen").status == STOPPED

    run(qemu, [ch], scenario)


def test_the_host_default_applies_to_vms_whose_config_names_none(run) -> None:
    qemu, ch = StandIn("qemu"), StandIn("cloud-hypervisor")

    async def scenario(vms: Orchestrator) -> None:
        assert (await vms.create(create("a"), start=False)).hypervisor == "cloud-hypervisor"
        assert (await vms.create(create("b", hypervisor="qemu"), start=False)).hypervisor == "qemu"

    run(ch, [qemu], scenario)


def test_a_restarted_daemon_asks_each_vms_own_driver_to_find_it(run) -> None:
    qemu, ch = StandIn("qemu"), StandIn("cloud-hypervisor")

    async def first(vms: Orchestrator) -> None:
        await vms.create(create("on-ch", hypervisor="cloud-hypervisor"), wait="none")

    async def second(vms: Orchestrator) -> None:
        await vms.recover()
        assert vms.running("on-ch") is not None

    run(qemu, [ch], first)
    run(qemu, [ch], second)
    assert (qemu.attached, ch.attached) == ([], ["on-ch"])


def test_an_unavailable_hypervisor_is_refused_with_its_reason_and_nothing_recorded(
    run, db, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CLOUDHYPERVISOR", raising=False)
    missing = CloudHypervisorDriver(cache_dir=tmp_path / "cache")

    async def scenario(vms: Orchestrator) -> None:
        with pytest.raises(HypervisorUnavailableError) as refused:
            await vms.create(create("web", hypervisor="cloud-hypervisor"), start=False)
        assert "hypervisor cloud-hypervisor cannot run VMs on this host" in str(refused.value)
        assert "cloud-hypervisor is not on PATH" in str(refused.value)
        assert db.vms.find("web") is None

    run(StandIn("qemu"), [missing], scenario)


def test_user_mode_networking_is_refused_on_a_hypervisor_without_it(run, db, ch_available) -> None:
    async def scenario(vms: Orchestrator) -> None:
        for mode in ("user", "isolated"):
            with pytest.raises(UnsupportedByHypervisorError, match="needs user-mode networking"):
                await vms.create(
                    create("web", hypervisor="cloud-hypervisor", network={"mode": mode}),
                    start=False,
                )
        assert db.vms.find("web") is None
        bridged = create("web", hypervisor="cloud-hypervisor", network={"mode": "bridged"})
        assert (await vms.create(bridged, start=False)).hypervisor == "cloud-hypervisor"

    run(StandIn("qemu"), [ch_available], scenario)


def test_a_start_is_refused_once_the_vms_hypervisor_is_gone(run, db, tmp_path, monkeypatch):
    qemu, ch = StandIn("qemu"), StandIn("cloud-hypervisor")

    async def scenario(vms: Orchestrator) -> None:
        await vms.create(create("web", hypervisor="cloud-hypervisor"), start=False)
        ch.capabilities = lambda: Capabilities(ch.name, False, "its binary was removed")  # type: ignore[method-assign]
        with pytest.raises(HypervisorUnavailableError, match="its binary was removed"):
            await vms.start("web", wait="none")
        assert db.vms.get("web").status == "pending" and ch.started == []

    run(qemu, [ch], scenario)


@pytest.mark.parametrize(
    ("value", "driver"),
    [(None, "qemu"), ("qemu", "qemu"), ("cloud-hypervisor", "cloud-hypervisor"),
     ("CH", "cloud-hypervisor"), ("cloud_hypervisor", "cloud-hypervisor")],
)  # fmt: skip
def test_volant_hypervisor_names_the_host_default(monkeypatch, value, driver) -> None:
    if value is None:
        monkeypatch.delenv("VOLANT_HYPERVISOR", raising=False)
    else:
        monkeypatch.setenv("VOLANT_HYPERVISOR", value)
    assert Settings.from_environment().default_hypervisor == driver


def test_an_unknown_volant_hypervisor_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("VOLANT_HYPERVISOR", "firecracker")
    with pytest.raises(SettingsError, match="'firecracker' \\(VOLANT_HYPERVISOR\\) is not one of"):
        Settings.from_environment()
