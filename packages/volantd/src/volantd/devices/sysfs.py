"""Host PCI devices as the kernel shows them in sysfs, under a configurable root.

The root is ``/sys`` on a host (``VOLANT_SYSFS_ROOT`` moves it: tests build a tree of the
same shape in a temporary folder). Only these paths are used::

    bus/pci/devices/<address>/          vendor, device, class, numa_node, driver_override,
                                        driver -> ../drivers/<name>, iommu_group -> .../<n>
    bus/pci/drivers/<name>/unbind       write an address: the driver lets go of the device
    bus/pci/drivers/<name>/bind         write an address: the driver takes the device
    bus/pci/drivers_probe               write an address: the kernel finds a driver for it
    kernel/iommu_groups/<n>/devices/    one entry per device of the group
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from volantd.devices.errors import DeviceNotFoundError, DeviceOperationError

DEFAULT_ROOT = Path("/sys")
SETTLE_S = 5.0
"""How long the kernel may take to do what a write asked (driver probing can be async)."""


@dataclass(frozen=True)
class PciDevice:
    """One PCI function: ids in lower-case hex without ``0x``, its driver (None: none),
    IOMMU group (None: no IOMMU) and NUMA node (-1: unknown)."""

    address: str
    vendor: str
    device: str
    class_code: str
    driver: str | None
    driver_override: str | None
    iommu_group: int | None
    numa_node: int

    @property
    def pci_id(self) -> str:
        return f"{self.vendor}:{self.device}"

    @property
    def is_bridge(self) -> bool:
        """A bridge (PCI class 06): part of the interconnect, never passed through, and no
        obstacle to passing the rest of its IOMMU group (the kernel allows it too)."""
        return self.class_code.startswith("06")

    def describe(self) -> str:
        """``0000:01:00.1 (10de:10f8, driver snd_hda_intel)``, for messages."""
        return f"{self.address} ({self.pci_id}, {_driver_text(self.driver)})"


class Sysfs:
    """Reads and writes the PCI part of sysfs under `root`.

    Writes are sysfs writes: they never create files, and every one is followed by a wait
    for its effect (`wait`), so a driver that probes asynchronously is no race.
    """

    def __init__(self, root: Path = DEFAULT_ROOT, settle_s: float = SETTLE_S) -> None:
        self.root = root
        self.settle_s = settle_s

    def device_path(self, address: str) -> Path:
        """``<root>/bus/pci/devices/<address>``: what Cloud Hypervisor's ``--device path=``
        takes."""
        return self.root / "bus" / "pci" / "devices" / address

    def driver_path(self, driver: str) -> Path:
        return self.root / "bus" / "pci" / "drivers" / driver

    @property
    def probe_path(self) -> Path:
        return self.root / "bus" / "pci" / "drivers_probe"

    def has_driver(self, driver: str) -> bool:
        """Whether `driver` is loaded (its folder exists)."""
        return self.driver_path(driver).is_dir()

    def device(self, address: str) -> PciDevice:
        """What sysfs says about `address` now. `DeviceNotFoundError` if it has no such device."""
        path = self.device_path(address)
        vendor, device = self._read(path / "vendor"), self._read(path / "device")
        if vendor is None or device is None:
            raise DeviceNotFoundError(
                f"no PCI device {address} on this host (nothing at {path}); `lspci -D` lists "
                "the addresses"
            )
        group = self._link_name(path / "iommu_group")
        numa = self._read(path / "numa_node")
        return PciDevice(
            address=address,
            vendor=_hex(vendor),
            device=_hex(device),
            class_code=_hex(self._read(path / "class") or ""),
            driver=self.driver_of(address),
            driver_override=_override(self._read(path / "driver_override")),
            iommu_group=int(group) if group is not None and group.isdigit() else None,
            numa_node=int(numa) if numa is not None and _is_int(numa) else -1,
        )

    def driver_of(self, address: str) -> str | None:
        """The driver bound to `address` now, or None."""
        return self._link_name(self.device_path(address) / "driver")

    def group_members(self, group: int) -> list[str]:
        """The PCI addresses in IOMMU group `group`, sorted."""
        folder = self.root / "kernel" / "iommu_groups" / str(group) / "devices"
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        return sorted(name for name in names if self.device_path(name).exists())

    def write(self, path: Path, text: str) -> None:
        """Write `text` to the sysfs file `path` (which must exist: sysfs files are never made)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        except OSError as error:
            raise DeviceOperationError(
                f"cannot open {path} for writing: {error.strerror}{_hint(error)}"
            ) from None
        try:
            os.write(fd, text.encode())
        except OSError as error:
            raise DeviceOperationError(
                f"writing {text.strip()!r} to {path} failed: {error.strerror}{_hint(error)}"
            ) from None
        finally:
            os.close(fd)

    def wait(self, done: Callable[[], bool], what: str) -> None:
        """Return once `done()` holds; `DeviceOperationError` naming `what` after ``settle_s``."""
        deadline = time.monotonic() + self.settle_s
        pause = 0.002
        while not done():
            if time.monotonic() >= deadline:
                raise DeviceOperationError(
                    f"gave up after {self.settle_s:g} s waiting for {what}; see the kernel log "
                    "(`dmesg`)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    @staticmethod
    def _link_name(path: Path) -> str | None:
        try:
            return os.path.basename(os.readlink(path))
        except OSError:
            return None


def _hex(text: str) -> str:
    text = text.strip().lower()
    return text[2:] if text.startswith("0x") else text


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _override(text: str | None) -> str | None:
    # The kernel shows an unset driver_override as "(null)"; writing "\n" clears it.
    return None if text in (None, "", "(null)") else text


def _driver_text(driver: str | None) -> str:
    return f"driver {driver}" if driver else "no driver"


def _hint(error: OSError) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return " (binding PCI devices needs root: run volantd as root)"
    return ""
