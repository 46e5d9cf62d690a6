"""The orchestrator and PCI passthrough: devices bound for a run of the VM and given back to the
host when it ends, however it ends.

A fake sysfs tree and kernel (tests/support/sysfs.py) stand in for a KVM host with an IOMMU,
and a fake VMM driver that offers VFIO stands in for Cloud Hypervisor: real passthrough needs
a KVM host with a PCI device to spare, which the machines these tests run on lack.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from support.manifests import add_agentless_plugin, bzimage
from support.sysfs import FakeKernel, ReactingSysfs
from volantd.devices import AllowList, DeviceManager, VfioUnsupportedError
from volantd.events import EventBus
from volantd.hypervisors import (
    Accel,
    Capabilities,
    HypervisorDriver,
    LaunchSpec,
    QemuDriver,
    VMMError,
    VMProcess,
    VMState,
    VMStatus,
)
from volantd.kernels import KernelStore
from volantd.store import Database, open_database
from volantd.vms import states
from volantd.vms.orchestrator import CreateRequest, Orchestrator

NIC, LONELY = "0000:02:00.0", "0000:04:00.0"


class FakeVMM(HypervisorDriver):
    """A VMM that offers VFIO and runs nothing: a VM 'runs' until stopped or `crash`ed."""

    name = "fake-vfio"

    def __init__(self, fail_start: bool = False) -> None:
        self.fail_start = fail_start
        self.specs: list[LaunchSpec] = []
        self.up = False

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, available=True, vfio=True, user_networking=True)

    def guest_drivers(self, *, network: bool, disks: int = 0) -> tuple[str, ...]:
        return ()

    def prepare(self, spec: LaunchSpec) -> None:
        pass

    async def start(self, spec: LaunchSpec) -> VMProcess:
        self.specs.append(spec)
        if self.fail_start:
            raise RuntimeError("the VMM would not start")
        self.up = True
        return VMProcess(spec.name, spec.run_dir, os.getpid(), os.getpid(), Accel.KVM)

    def detach(self, vm: VMProcess) -> None:
        pass

    async def stop(self, vm: VMProcess, timeout: float = 10.0) -> VMStatus:
        self.up = False
        return VMStatus(VMState.STOPPED)

    async def status(self, vm: VMProcess) -> VMStatus:
        return VMStatus(VMState.RUNNING if self.up else VMState.CRASHED, detail="killed")

    def alive(self, vm: VMProcess) -> bool:
        return self.up

    async def attach(self, name: str, run_dir: Path) -> VMProcess | None:
        return None


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver("vfio-pci")
    kernel.add_device(NIC, "8086", "1533", driver="igb", iommu_group=2)
    kernel.add_device(LONELY, "1af4", "1041", iommu_group=4)
    return kernel


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "home" / "volant.db")
    add_agentless_plugin(database, tmp_path, "nic")
    yield database
    database.close()


Run = Callable[[HypervisorDriver, Callable[[Orchestrator], Awaitable[Any]]], Any]


@pytest.fixture
def run(tmp_path: Path, db: Database, kernel: FakeKernel) -> Run:
    """Run `scenario` against an orchestrator with `driver`, on the fake host."""
    kernels = KernelStore(tmp_path / "kernels", tmp_path / "cache")
    (tmp_path / "bzImage").write_bytes(bzimage("6.9.0-test (t@h) #1 SMP"))
    kernels.import_kernel(tmp_path / "bzImage", make_default=True)
    devices = DeviceManager(db, ReactingSysfs(kernel), AllowList(("8086:1533", "1af4:1041")))

    def run(driver: HypervisorDriver, scenario: Callable[[Orchestrator], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            bus = EventBus(db)
            vms = Orchestrator(db, kernels, driver, bus, tmp_path / "run", tmp_path / "cache",
                               devices=devices)  # fmt: skip
            try:
                return await scenario(vms)
            finally:
                await vms.close()
                bus.close()

        return asyncio.run(main())

    return run


def with_devices(name: str, *addresses: str) -> CreateRequest:
    return CreateRequest(name=name, plugin="nic",
                         config={"devices": {"pci_passthrough": list(addresses)}})  # fmt: skip


def test_a_start_binds_the_devices_and_a_stop_gives_them_back(
    run: Run, kernel: FakeKernel, db: Database
) -> None:
    vmm = FakeVMM()

    async def scenario(vms: Orchestrator) -> None:
        record = await vms.create(with_devices("nic-vm", NIC, LONELY), wait="none")
        assert record.status == states.RUNNING
        assert kernel.driver_of(NIC) == kernel.driver_of(LONELY) == "vfio-pci"
        assert [claim.vm_name for claim in db.device_claims.all()] == ["nic-vm", "nic-vm"]
        await vms.stop("nic-vm")
        assert (kernel.driver_of(NIC), kernel.driver_of(LONELY)) == ("igb", None)
        assert db.device_claims.all() == []
        await vms.start("nic-vm", wait="none")  # bound again for the next run
        assert kernel.driver_of(NIC) == "vfio-pci"
        await vms.delete("nic-vm")
        assert kernel.driver_of(NIC) == "igb" and db.device_claims.all() == []

    run(vmm, scenario)
    assert vmm.specs[0].devices == (kernel.device_dir(NIC), kernel.device_dir(LONELY))


def test_a_crashed_vmm_gives_its_devices_back(run: Run, kernel: FakeKernel) -> None:
    vmm = FakeVMM()

    async def scenario(vms: Orchestrator) -> str:
        await vms.create(with_devices("nic-vm", NIC), wait="none")
        vmm.up = False  # the VMM dies
        for _ in range(100):
            if vms.get("nic-vm").status == states.CRASHED:
                break
            await asyncio.sleep(0.05)
        return vms.get("nic-vm").status

    assert run(vmm, scenario) == states.CRASHED
    assert kernel.driver_of(NIC) == "igb"


def test_a_failed_start_gives_the_devices_back(run: Run, kernel: FakeKernel, db: Database) -> None:
    async def scenario(vms: Orchestrator) -> None:
        with pytest.raises(RuntimeError, match="would not start"):
            await vms.create(with_devices("nic-vm", NIC), wait="none")

    run(FakeVMM(fail_start=True), scenario)
    assert kernel.driver_of(NIC) == "igb"
    assert db.device_claims.all() == []
    assert db.vms.get("nic-vm").status == states.CRASHED


def test_a_device_in_use_is_refused_before_the_vm_is_recorded(
    run: Run, kernel: FakeKernel, db: Database
) -> None:
    db.device_claims.claim("other-vm", {NIC: "igb"})

    async def scenario(vms: Orchestrator) -> None:
        with pytest.raises(Exception, match=r'0000:02:00\.0 is claimed by vm "other-vm"'):
            await vms.create(with_devices("nic-vm", NIC), wait="none")

    run(FakeVMM(), scenario)
    assert db.vms.find("nic-vm") is None
    assert kernel.writes == []


def test_qemu_says_why_it_cannot_pass_devices_through(tmp_path: Path) -> None:
    capabilities = QemuDriver().capabilities()
    assert not capabilities.vfio
    assert capabilities.vfio_reason.startswith("QEMU microvm has no PCI bus")
    spec = LaunchSpec("nic-vm", tmp_path, Path("/nonexistent"), devices=(Path("/sys/x"),))
    with pytest.raises(VMMError, match="QEMU microvm has no PCI bus"):
        QemuDriver().prepare(replace(spec, kernel=Path(__file__)))


def test_qemu_refuses_passthrough_before_anything_is_bound(
    run: Run, kernel: FakeKernel, db: Database
) -> None:
    if not QemuDriver().capabilities().available:
        pytest.skip("qemu-system-x86_64 is not installed")

    async def scenario(vms: Orchestrator) -> None:
        with pytest.raises(
            VfioUnsupportedError,
            match=r"devices\.pci_passthrough: QEMU microvm has no PCI bus: VFIO passthrough "
            r"needs the cloud-hypervisor driver on a KVM host",
        ):
            await vms.create(with_devices("nic-vm", NIC), start=False)

    run(QemuDriver(), scenario)
    assert db.vms.find("nic-vm") is None
    assert kernel.writes == []


def test_a_daemon_start_gives_back_the_devices_of_vms_that_are_gone(
    run: Run, kernel: FakeKernel, db: Database
) -> None:
    vmm = FakeVMM()

    async def start(vms: Orchestrator) -> None:
        await vms.create(with_devices("nic-vm", NIC), wait="none")

    async def recover(vms: Orchestrator) -> None:
        await vms.recover()

    run(vmm, start)  # the daemon exits, the VM keeps its device...
    assert kernel.driver_of(NIC) == "vfio-pci"
    run(vmm, recover)  # ...and is gone when the next one starts (attach finds nothing)
    assert kernel.driver_of(NIC) == "igb"
    assert db.device_claims.all() == []
    assert db.vms.get("nic-vm").status == states.CRASHED
