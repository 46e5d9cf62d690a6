"""A PCI sysfs tree in a folder, and a fake kernel that reacts to writes into it.

No real PCI device or IOMMU exists on the development machines (real passthrough needs a KVM
host with an IOMMU), so the VFIO tests run volantd's sysfs code against this tree: the same
paths, files and symlinks as Linux (``bus/pci/devices/<address>`` linking to the device's
folder, ``driver`` and ``iommu_group`` links, ``kernel/iommu_groups/<n>/devices``), with
plain files where the kernel has attribute files. `FakeKernel.react` plays the kernel's part
for the writes volantd makes — ``driver_override``, ``drivers/<name>/unbind`` and ``bind``,
``drivers_probe`` — by moving the ``driver`` links as Linux would. It runs after each write
(`ReactingSysfs`, for in-process tests) or on a thread (`FakeKernel.running`, for a volantd
in another process).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from volantd.devices import Sysfs

COMMANDS = ("bind", "unbind", "new_id", "remove_id")

GPU, GPU_AUDIO, BRIDGE = "0000:01:00.0", "0000:01:00.1", "0000:00:01.0"
NIC, NVME, LONELY, NO_IOMMU = "0000:02:00.0", "0000:03:00.0", "0000:04:00.0", "0000:05:00.0"
HOST_ALLOWLIST = ("10de:*", "8086:1533", "1af4:1041", "8086:10d3")
"""Every device of `kvm_host` but the host's disk."""


class FakeKernel:
    """The PCI part of sysfs under `root`, and the kernel's reactions to writes into it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.native: dict[str, str | None] = {}
        """Which driver would claim each device when probed without an override."""
        self.writes: list[tuple[str, str]] = []
        """Every command the kernel saw: (file relative to the root, value)."""
        self._lock = threading.Lock()
        (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
        (root / "bus" / "pci" / "drivers").mkdir(parents=True, exist_ok=True)
        (root / "kernel" / "iommu_groups").mkdir(parents=True, exist_ok=True)
        (root / "devices" / "pci0000:00").mkdir(parents=True, exist_ok=True)
        (root / "bus" / "pci" / "drivers_probe").write_text("")

    # -- building the tree ------------------------------------------------------------------

    def add_driver(self, name: str) -> None:
        folder = self.driver_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        for command in COMMANDS:
            (folder / command).touch()

    def add_device(
        self,
        address: str,
        vendor: str,
        device: str,
        *,
        driver: str | None = None,
        iommu_group: int | None = None,
        class_code: str = "0x020000",
        numa_node: int = -1,
    ) -> None:
        """A PCI function bound to `driver` (its native driver, loaded if new), in IOMMU
        group `iommu_group` (None: the host has no IOMMU)."""
        folder = self.root / "devices" / "pci0000:00" / address
        folder.mkdir(parents=True)
        (folder / "vendor").write_text(f"0x{vendor}\n")
        (folder / "device").write_text(f"0x{device}\n")
        (folder / "class").write_text(f"{class_code}\n")
        (folder / "numa_node").write_text(f"{numa_node}\n")
        (folder / "driver_override").write_text("(null)\n")
        os.symlink(os.path.relpath(folder, self.root / "bus" / "pci" / "devices"),
                   self.root / "bus" / "pci" / "devices" / address)  # fmt: skip
        if iommu_group is not None:
            group = self.root / "kernel" / "iommu_groups" / str(iommu_group)
            (group / "devices").mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(group, folder), folder / "iommu_group")
            os.symlink(os.path.relpath(folder, group / "devices"), group / "devices" / address)
        self.native[address] = driver
        if driver is not None:
            self.add_driver(driver)
            self._bind(address, driver)

    def device_dir(self, address: str) -> Path:
        return self.root / "bus" / "pci" / "devices" / address

    def remove_driver(self, name: str) -> None:
        """Unload a driver that has no device (``modprobe -r``)."""
        shutil.rmtree(self.driver_dir(name))

    def driver_dir(self, name: str) -> Path:
        return self.root / "bus" / "pci" / "drivers" / name

    def driver_of(self, address: str) -> str | None:
        link = self.device_dir(address) / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def override_of(self, address: str) -> str | None:
        value = (self.device_dir(address) / "driver_override").read_text().strip()
        return None if value in ("", "(null)") else value

    # -- the kernel's part ------------------------------------------------------------------

    def react(self) -> None:
        """Carry out every command written since the last call, as Linux would have."""
        with self._lock:
            drivers = self.root / "bus" / "pci" / "drivers"
            for folder in sorted(drivers.iterdir()):
                for command in COMMANDS:
                    for value in self._take(folder / command):
                        self._command(folder.name, command, value)
            for value in self._take(self.root / "bus" / "pci" / "drivers_probe"):
                self.writes.append(("bus/pci/drivers_probe", value))
                self._probe(value)

    @contextmanager
    def running(self, interval: float = 0.005) -> Iterator[FakeKernel]:
        """React on a thread, for a volantd in another process."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                self.react()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def _take(self, path: Path) -> list[str]:
        text = path.read_text() if path.exists() else ""
        if not text:
            return []
        os.truncate(path, 0)
        return [line.strip() for line in text.splitlines() if line.strip()]

    def _command(self, driver: str, command: str, value: str) -> None:
        self.writes.append((f"bus/pci/drivers/{driver}/{command}", value))
        if command == "unbind" and self.driver_of(value) == driver:
            self._unbind(value)
        elif command == "bind" and self.driver_of(value) is None:
            override = self.override_of(value)
            if override in (None, driver) and driver in (override, self.native.get(value)):
                self._bind(value, driver)

    def _probe(self, address: str) -> None:
        if not self.device_dir(address).exists() or self.driver_of(address) is not None:
            return
        override = self.override_of(address)
        driver = override if override is not None else self.native.get(address)
        if driver is not None and self.driver_dir(driver).is_dir():
            self._bind(address, driver)

    def _bind(self, address: str, driver: str) -> None:
        device = self.device_dir(address).resolve()
        os.symlink(os.path.relpath(self.driver_dir(driver), device), device / "driver")
        os.symlink(os.path.relpath(device, self.driver_dir(driver)),
                   self.driver_dir(driver) / address)  # fmt: skip

    def _unbind(self, address: str) -> None:
        driver = self.driver_of(address)
        (self.device_dir(address).resolve() / "driver").unlink()
        if driver is not None:
            (self.driver_dir(driver) / address).unlink(missing_ok=True)


class ReactingSysfs(Sysfs):
    """volantd's own `Sysfs`, with the fake kernel reacting as soon as a write is made (the
    real kernel does its work inside the write call)."""

    def __init__(self, kernel: FakeKernel, settle_s: float = 0.5) -> None:
        super().__init__(kernel.root, settle_s)
        self.kernel = kernel

    def write(self, path: Path, text: str) -> None:
        super().write(path, text)
        self.kernel.react()


def kvm_host(root: Path) -> FakeKernel:
    """A small KVM host with an IOMMU, vfio-pci loaded, and these devices::

    group 1: 0000:00:01.0  8086:1901 PCI bridge (pcieport)
             0000:01:00.0  10de:1db6 GPU (nouveau)
             0000:01:00.1  10de:10f8 the GPU's audio function (snd_hda_intel)
    group 2: 0000:02:00.0  8086:1533 NIC (igb)
    group 3: 0000:03:00.0  144d:a808 NVMe, the host's disk (nvme)
    group 4: 0000:04:00.0  1af4:1041 a device no driver took
    none:    0000:05:00.0  8086:10d3 NIC on a bus without IOMMU (e1000e)
    """
    kernel = FakeKernel(root)
    kernel.add_driver("vfio-pci")
    kernel.add_device(BRIDGE, "8086", "1901", driver="pcieport", iommu_group=1,
                      class_code="0x060400", numa_node=0)  # fmt: skip
    kernel.add_device(GPU, "10de", "1db6", driver="nouveau", iommu_group=1,
                      class_code="0x030200", numa_node=0)  # fmt: skip
    kernel.add_device(GPU_AUDIO, "10de", "10f8", driver="snd_hda_intel", iommu_group=1,
                      class_code="0x040300", numa_node=0)  # fmt: skip
    kernel.add_device(NIC, "8086", "1533", driver="igb", iommu_group=2)
    kernel.add_device(NVME, "144d", "a808", driver="nvme", iommu_group=3, class_code="0x010802")
    kernel.add_device(LONELY, "1af4", "1041", iommu_group=4)
    kernel.add_device(NO_IOMMU, "8086", "10d3", driver="e1000e")
    return kernel
