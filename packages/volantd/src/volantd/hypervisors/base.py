"""The hypervisor driver interface: what the orchestrator may ask of any VMM.

The orchestrator never branches on which VMM it drives; it asks a driver for its
`Capabilities` and hands it a `LaunchSpec`. Each VMM (QEMU here, Cloud Hypervisor on KVM
hosts) implements `HypervisorDriver` in a module of its own.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path


class Accel(enum.StrEnum):
    """How guest code runs: hardware virtualisation or software emulation."""

    KVM = "kvm"
    TCG = "tcg"


class NetworkMode(enum.StrEnum):
    """The VMM side of a guest NIC: user-mode NAT (``isolated``: no egress), a host tap
    device (bridged and dhcp modes: the tap is on the bridge), or no NIC."""

    USER = "user"
    ISOLATED = "isolated"
    TAP = "tap"
    NONE = "none"


@dataclass(frozen=True)
class PortForward:
    """A host TCP/UDP port on `host_addr` forwarded to a port in the guest."""

    host_port: int
    guest_port: int
    protocol: str = "tcp"
    host_addr: str = "127.0.0.1"


@dataclass(frozen=True)
class NetworkSpec:
    """The guest NIC: user-mode NAT (`isolated` = no egress) with loopback port forwards, or
    the host tap device `tap` (made and removed by the network driver, not the VMM)."""

    mode: NetworkMode = NetworkMode.USER
    mac: str = "52:54:00:12:34:56"
    forwards: tuple[PortForward, ...] = ()
    tap: str | None = None


@dataclass(frozen=True)
class DiskSpec:
    """A block device for the guest, in attach order (the first is the guest's ``/dev/vda``).

    ``path`` is a host file in ``format`` (``raw`` or ``qcow2``; a qcow2 file may have a
    backing chain, which the VMM opens read-only). ``readonly`` disks are never written.
    """

    path: Path
    format: str = "raw"
    readonly: bool = False
    name: str = "disk"


@dataclass(frozen=True)
class VsockSpec:
    """A guest vsock device: the guest's context id and, for VMMs with *hybrid* vsock (Cloud
    Hypervisor), the host unix socket behind it (``CONNECT <port>`` reaches a guest port)."""

    cid: int
    socket: Path


FIRST_GUEST_CID = 3
"""CIDs 0-2 are the hypervisor, the local loopback and the host."""
MAX_GUEST_CID = 0xFFFFFFFE
"""0xFFFFFFFF is VMADDR_CID_ANY."""


def vsock_cid_for(vm_id: int) -> int:
    """A VM's vsock context id: unique among VMs and stable for a VM (3 + its numeric id)."""
    cid = FIRST_GUEST_CID + vm_id
    if vm_id < 0 or cid > MAX_GUEST_CID:
        raise ValueError(f"vm id {vm_id} has no vsock CID (ids 0..{MAX_GUEST_CID - 3} do)")
    return cid


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a driver needs to run one VM; paths are host paths."""

    name: str
    run_dir: Path
    kernel: Path
    initrd: Path | None = None
    cmdline: str = "console=ttyS0 panic=-1"
    cpus: int = 1
    memory_mb: int = 256
    network: NetworkSpec | None = field(default_factory=NetworkSpec)
    disks: tuple[DiskSpec, ...] = ()
    devices: tuple[Path, ...] = ()
    """Host PCI devices passed through (VFIO), as sysfs device directories
    (``/sys/bus/pci/devices/0000:01:00.0``), already bound to vfio-pci by volantd."""
    vsock: VsockSpec | None = None
    """The guest's vsock device; None: none (a driver without vsock ignores it)."""


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do on this host; the orchestrator asks instead of testing types."""

    name: str
    available: bool
    reason: str = ""
    accel: Accel | None = None
    vsock: bool = False
    vfio: bool = False
    vfio_reason: str = ""
    """Why ``vfio`` is false, for the operator (which driver or host setup to use instead)."""
    hotplug: bool = False
    user_networking: bool = False
    hybrid_vsock: bool = False
    """vsock is reached through the VMM's unix socket (``CONNECT <port>``), not AF_VSOCK."""


class VMState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # guest powered off, VMM still exiting
    STOPPED = "stopped"  # VMM exited cleanly
    CRASHED = "crashed"  # VMM exited with an error or was killed


@dataclass(frozen=True)
class VMStatus:
    state: VMState
    pid: int | None = None
    exit_code: int | None = None
    detail: str = ""


@dataclass
class VMProcess:
    """A running VM as a driver sees it: its run directory and VMM process id.

    While `bound` is true the VM dies with the process that started it (a daemon killed
    mid-boot leaves nothing behind); `HypervisorDriver.detach` lets it outlive its owner.
    """

    name: str
    run_dir: Path
    pid: int
    monitor_pid: int
    accel: Accel
    lifeline: int | None = None  # write end of the pipe that binds the VM to its owner

    @property
    def bound(self) -> bool:
        return self.lifeline is not None


class HypervisorDriver(ABC):
    """One VMM behind the interface the orchestrator uses."""

    name: str

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this driver offers on this host, or why it is unavailable."""

    @abstractmethod
    def guest_drivers(self, *, network: bool, disks: int = 0) -> tuple[str, ...]:
        """The guest kernel drivers (module names) a VM with these devices needs."""

    @abstractmethod
    def prepare(self, spec: LaunchSpec) -> None:
        """Check the spec and lay out its run directory; safe to repeat."""

    @abstractmethod
    async def start(self, spec: LaunchSpec) -> VMProcess:
        """Spawn the VMM and return once it is running the guest (bound to the caller)."""

    @abstractmethod
    def detach(self, vm: VMProcess) -> None:
        """Let a started VM outlive this process (call once its record is stored)."""

    @abstractmethod
    async def stop(self, vm: VMProcess, timeout: float = 10.0) -> VMStatus:
        """Power the guest down gracefully, then force the VMM off after `timeout` seconds."""

    @abstractmethod
    async def status(self, vm: VMProcess) -> VMStatus:
        """The VM's current state."""

    @abstractmethod
    def alive(self, vm: VMProcess) -> bool:
        """Whether the VMM process still exists (cheap: no control-socket round trip)."""

    @abstractmethod
    async def attach(self, name: str, run_dir: Path) -> VMProcess | None:
        """Find a VM left running by an earlier daemon, or None when it is gone."""
