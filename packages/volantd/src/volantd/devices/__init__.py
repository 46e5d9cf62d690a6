"""Host PCI devices for VMs (VFIO): addresses and allow-lists, sysfs, binding to vfio-pci and
back, and who holds which device (docs/devices.md)."""

from volantd.devices.errors import (
    DeviceConflictError,
    DeviceError,
    DeviceNotAllowedError,
    DeviceNotFoundError,
    DeviceOperationError,
    InvalidDeviceError,
    VfioUnsupportedError,
)
from volantd.devices.manager import Binding, DeviceManager, IommuGroup
from volantd.devices.pci import AllowList, parse_address, parse_addresses
from volantd.devices.sysfs import PciDevice, Sysfs
from volantd.devices.vfio import VFIO_DRIVER, VfioBinder

__all__ = [
    "VFIO_DRIVER",
    "AllowList",
    "Binding",
    "DeviceConflictError",
    "DeviceError",
    "DeviceManager",
    "DeviceNotAllowedError",
    "DeviceNotFoundError",
    "DeviceOperationError",
    "InvalidDeviceError",
    "IommuGroup",
    "PciDevice",
    "Sysfs",
    "VfioBinder",
    "VfioUnsupportedError",
    "parse_address",
    "parse_addresses",
]
