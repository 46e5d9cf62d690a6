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
    VsockSpec,
    vsock_cid_for,
)
from volantd.hypervisors.cloud_hypervisor import CloudHypervisorDriver
from volantd.hypervisors.cloud_hypervisor_api import build_vm_config
from volantd.hypervisors.monitored import VMMError
from volantd.hypervisors.qemu import QemuDriver, build_qemu_args

__all__ = [
    "Accel",
    "Capabilities",
    "CloudHypervisorDriver",
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
    "VsockSpec",
    "build_qemu_args",
    "build_vm_config",
    "vsock_cid_for",
]
