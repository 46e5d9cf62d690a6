"""Hypervisor drivers: one VMM behind one interface (`HypervisorDriver`)."""

from volantd.hypervisors.base import (
    Accel,
    Capabilities,
    DiskSpec,
    HypervisorDriver,
    LaunchSpec,
    NetworkMode,
    NetworkSpec,
    PortForward,
    VMProcess,
    VMState,
    VMStatus,
)
from volantd.hypervisors.qemu import QemuDriver, VMMError, build_qemu_args

__all__ = [
    "Accel",
    "Capabilities",
    "DiskSpec",
    "HypervisorDriver",
    "LaunchSpec",
    "NetworkMode",
    "NetworkSpec",
    "PortForward",
    "QemuDriver",
    "VMMError",
    "VMProcess",
    "VMState",
    "VMStatus",
    "build_qemu_args",
]
