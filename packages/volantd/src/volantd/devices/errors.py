"""Errors of the device manager; the API maps each class to its own HTTP status."""

from volantd.errors import VolantError


class DeviceError(VolantError):
    """Base of every device error: the message names the device and what to do."""


class InvalidDeviceError(DeviceError):
    """The request is wrong: not a PCI address, a bridge, outside the VM's own allow-list."""


class DeviceNotFoundError(DeviceError):
    """No such PCI device on this host."""


class DeviceNotAllowedError(DeviceError):
    """The host's VFIO allow-list (``VOLANT_VFIO_ALLOWLIST``) does not let volantd take it."""


class DeviceConflictError(DeviceError):
    """The host's state forbids it now: claimed by another VM, an IOMMU group shared with a
    device the host still drives, no IOMMU, no vfio-pci driver, not bound by volantd."""


class VfioUnsupportedError(DeviceConflictError):
    """The hypervisor driver cannot pass PCI devices through."""


class DeviceOperationError(DeviceError):
    """A sysfs write failed or the kernel did not do what it was asked in time."""
