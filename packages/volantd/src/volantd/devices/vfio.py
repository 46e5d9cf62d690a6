"""Moving one PCI device between its host driver and vfio-pci, through sysfs.

Binding sets the device's ``driver_override`` to ``vfio-pci``, unbinds it from its driver
and asks the kernel to probe it again: only vfio-pci may take it then. Giving it back undoes
each step: unbind from vfio-pci, clear ``driver_override``, probe again, so the original
driver takes it back. ``new_id`` is never written (upstream did: vfio-pci then grabs every
unbound device with that vendor:device, and keeps doing so until ``remove_id``).
Each write is followed by a wait until sysfs shows its effect.
"""

from __future__ import annotations

import logging

from volantd.devices.errors import DeviceConflictError, DeviceError
from volantd.devices.sysfs import Sysfs

log = logging.getLogger("volantd.devices")

VFIO_DRIVER = "vfio-pci"


class VfioBinder:
    """Binds devices to vfio-pci and gives them back; holds no state of its own."""

    def __init__(self, sysfs: Sysfs) -> None:
        self.sysfs = sysfs

    def bind(self, address: str) -> str | None:
        """Give `address` to vfio-pci; returns the driver it had (None: none). A device on
        vfio-pci already is left alone. On failure the device is given back, then the error
        raised."""
        sysfs = self.sysfs
        original = sysfs.driver_of(address)
        if original == VFIO_DRIVER:
            return original
        if not sysfs.has_driver(VFIO_DRIVER):
            raise DeviceConflictError(
                f"cannot bind {address}: the vfio-pci driver is not loaded on this host "
                f"(no {sysfs.driver_path(VFIO_DRIVER)}); run `modprobe vfio-pci`"
            )
        try:
            sysfs.write(sysfs.device_path(address) / "driver_override", VFIO_DRIVER)
            if original is not None:
                sysfs.write(sysfs.driver_path(original) / "unbind", address)
                sysfs.wait(lambda: sysfs.driver_of(address) is None,
                           f"{original} to let go of {address}")  # fmt: skip
            sysfs.write(sysfs.probe_path, address)
            sysfs.wait(lambda: sysfs.driver_of(address) == VFIO_DRIVER,
                       f"vfio-pci to take {address}")  # fmt: skip
        except DeviceError:
            try:
                self.give_back(address, original)
            except DeviceError as error:
                log.warning("could not give %s back after a failed bind: %s", address, error)
            raise
        log.info("bound %s to vfio-pci (was %s)", address, original or "driverless")
        return original

    def give_back(self, address: str, original: str | None) -> str | None:
        """Return `address` to the state volantd found it in: driver `original`, or no
        driver when None (a device found on vfio-pci stays there). Returns the driver it has
        afterwards; safe to repeat, and a device that is gone (unplugged) is no error."""
        sysfs = self.sysfs
        if not sysfs.device_path(address).exists():
            return None
        if original == VFIO_DRIVER:
            return original
        if sysfs.driver_of(address) == VFIO_DRIVER:
            sysfs.write(sysfs.driver_path(VFIO_DRIVER) / "unbind", address)
            sysfs.wait(lambda: sysfs.driver_of(address) is None,
                       f"vfio-pci to let go of {address}")  # fmt: skip
        if sysfs.device(address).driver_override == VFIO_DRIVER:
            sysfs.write(sysfs.device_path(address) / "driver_override", "\n")
        if original is None or sysfs.driver_of(address) is not None:
            return sysfs.driver_of(address)
        sysfs.write(sysfs.probe_path, address)
        try:
            sysfs.wait(lambda: sysfs.driver_of(address) is not None,
                       f"{original} to take {address} back")  # fmt: skip
        except DeviceError:
            if not (sysfs.driver_path(original) / "bind").exists():
                raise
            # The probe found no driver (e.g. it was bound by hand before): ask it directly.
            sysfs.write(sysfs.driver_path(original) / "bind", address)
            sysfs.wait(lambda: sysfs.driver_of(address) == original,
                       f"{original} to take {address} back")  # fmt: skip
        driver = sysfs.driver_of(address)
        log.info("gave %s back to %s", address, driver)
        return driver
