"""The QEMU `microvm` driver: direct kernel boot, virtio-mmio devices, QMP for control.

Each VM lives in its run directory: QEMU runs with that directory as its working directory,
so its sockets have short relative names there:

    qmp.sock      QMP control socket (driven with the `qemu.qmp` library)
    console.sock  serial console (a client may attach at any time)
    serial.log    everything the guest printed on the serial console
    vmm.log       QEMU's own stdout and stderr
    vmm.pid, monitor.pid, exit.json   written by the per-VM monitor (see volantd/vmm_monitor.py)

Disks (`LaunchSpec.disks`) are virtio-blk devices on virtio-mmio, attached in order (the first
one is the guest's /dev/vda); the files themselves (a per-VM overlay, see volantd.disks) are
the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
from qemu.qmp import QMPClient, QMPError

from volantd import paths
from volantd.errors import VolantError
from volantd.hosttools import require_tool
from volantd.hypervisors.accel import AccelChoice, choose_accel, kvm_device_usable
from volantd.hypervisors.base import (
    Accel,
    Capabilities,
    DiskSpec,
    LaunchSpec,
    NetworkMode,
    NetworkSpec,
    VMProcess,
    VMState,
    VMStatus,
)
from volantd.hypervisors.monitored import (
    MonitoredDriver,
    VMMError,
    check_launch_files,
    check_socket_paths,
    process_alive,
)

QEMU_BINARY = "qemu-system-x86_64"
TCG_CPU = "max,erms=off,fsrm=off"
VHOST_VSOCK = Path("/dev/vhost-vsock")
"""The host kernel's vsock backend: guests get a vsock device where it exists."""
"""The emulated CPU: everything TCG offers except fast string moves, which it emulates slowly;
without them the guest kernel and libc copy and clear memory with ordinary loops, and the
kernel unpacks a 22 MiB initramfs about a third faster (docs/hypervisors.md)."""
QMP_SOCKET = "qmp.sock"
CONSOLE_SOCKET = "console.sock"
SERIAL_LOG = "serial.log"
DISK_FORMATS = ("raw", "qcow2")
QMP_TIMEOUT_S = 5.0
NO_VFIO = (
    "QEMU microvm has no PCI bus: VFIO passthrough needs the cloud-hypervisor driver on a KVM host"
)


def host_tsc_khz() -> int | None:
    """The host TSC frequency in kHz, as /proc/cpuinfo reports it (x86 only)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def guest_cmdline(spec: LaunchSpec, accel: Accel, tsc_khz: int | None) -> str:
    """The spec's kernel command line plus what this accelerator needs.

    Under TCG a microvm offers the guest no PIT speaker gate, HPET or ACPI PM timer to
    calibrate its TSC against, and the kernel stalls with its clock at zero; TCG's TSC is the
    host's, so passing the host frequency (`tsc_early_khz`) lets the guest skip calibration.
    """
    cmdline = spec.cmdline
    if accel is Accel.TCG and tsc_khz and "tsc_early_khz=" not in cmdline:
        # before a " -- ": what follows it are the init's arguments, not the kernel's
        kernel, separator, init_args = cmdline.partition(" -- ")
        cmdline = f"{kernel} tsc_early_khz={tsc_khz}{separator}{init_args}"
    return cmdline


def build_qemu_args(
    spec: LaunchSpec, accel: Accel, binary: str = QEMU_BINARY, tsc_khz: int | None = None
) -> list[str]:
    """The QEMU command line for `spec`; paths of sockets and logs are relative to its run dir."""
    args = [
        binary,
        "-name", f"volant-{spec.name}",
        "-M", "microvm",
        "-accel", accel.value,
        "-cpu", "host" if accel is Accel.KVM else TCG_CPU,
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mb}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(spec.kernel),
        "-append", guest_cmdline(spec, accel, tsc_khz),
        "-chardev",
        f"socket,id=console,path={CONSOLE_SOCKET},server=on,wait=off,logfile={SERIAL_LOG},logappend=on",
        "-serial", "chardev:console",
        "-qmp", f"unix:{QMP_SOCKET},server=on,wait=off",
    ]  # fmt: skip
    if spec.initrd is not None:
        args += ["-initrd", str(spec.initrd)]
    for index, disk in enumerate(spec.disks):
        args += ["-drive", drive_option(disk, f"disk{index}"),
                 "-device", f"virtio-blk-device,drive=disk{index}"]  # fmt: skip
    network = spec.network
    if network is not None and network.mode is not NetworkMode.NONE:
        args += ["-netdev", netdev_option(network),
                 "-device", f"virtio-net-device,netdev=net0,mac={network.mac}"]  # fmt: skip
    if spec.vsock is not None:  # the host kernel's vhost-vsock backs it (/dev/vhost-vsock)
        args += ["-device", f"vhost-vsock-device,guest-cid={spec.vsock.cid}"]
    return args


def netdev_option(network: NetworkSpec) -> str:
    """``-netdev`` for the guest NIC: slirp with its loopback forwards, or a tap device the
    network driver made (no ifup scripts: the tap is already on its bridge)."""
    if network.mode is NetworkMode.TAP:
        if not network.tap:
            raise VolantError("a tap network needs the name of its tap device")
        return f"tap,id=net0,ifname={network.tap},script=no,downscript=no"
    netdev = "user,id=net0"
    if network.mode is NetworkMode.ISOLATED:
        netdev += ",restrict=on"
    for forward in network.forwards:
        netdev += (
            f",hostfwd={forward.protocol}:{forward.host_addr}:{forward.host_port}"
            f"-:{forward.guest_port}"
        )
    return netdev


def drive_option(disk: DiskSpec, drive_id: str) -> str:
    """``-drive`` for one disk: no emulated controller (``if=none``), the device is virtio-blk.

    A qcow2 overlay's backing chain is opened read-only by QEMU; ``read-only=on`` makes the
    disk itself read-only too. ``cache=writeback``: guest flushes reach the host file, which
    outlives the VMM, so writes survive a restart of the VM.
    """
    option = (
        f"file={_option_value(str(disk.path))},if=none,id={drive_id},format={disk.format},"
        "cache=writeback"
    )
    return option + (",read-only=on" if disk.readonly else ",discard=unmap")


def _option_value(value: str) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled."""
    return value.replace(",", ",,")


class QemuDriver(MonitoredDriver):
    """Runs VMs as QEMU microvm processes, each under its own monitor process."""

    name = "qemu"
    vmm_label = "QEMU"
    control_socket = QMP_SOCKET
    control_name = "QMP socket"

    def __init__(
        self,
        binary: str | None = None,
        accel: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._binary = binary
        self._accel_request = accel
        self._cache_dir = cache_dir
        self._qmp_locks: dict[Path, asyncio.Lock] = {}

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = require_tool(QEMU_BINARY, "run microVMs with the qemu driver")
        return self._binary

    def guest_drivers(self, *, network: bool, disks: int = 0) -> tuple[str, ...]:
        """microvm's devices are virtio-mmio: the transport, plus the NIC and disk drivers
        (and vsock's where the host has vhost-vsock: the orchestrator then adds a device)."""
        return (
            "virtio_mmio",
            *(("virtio_net",) if network else ()),
            *(("virtio_blk",) if disks else ()),
            *(("vmw_vsock_virtio_transport",) if VHOST_VSOCK.exists() else ()),
        )

    def capabilities(self) -> Capabilities:
        try:
            self.binary  # noqa: B018 - resolving the binary is the availability check
        except VolantError as error:
            return Capabilities(self.name, available=False, reason=str(error), vfio_reason=NO_VFIO)
        kvm, why = kvm_device_usable()
        return Capabilities(
            self.name,
            available=True,
            reason=why if kvm else f"{why}; guests run under TCG",
            vsock=VHOST_VSOCK.exists(),
            vfio_reason=NO_VFIO,
            user_networking=True,
        )

    def choose_accel(self, kernel: Path) -> AccelChoice:
        cache = (self._cache_dir or paths.cache_dir()) / "accel-probe.json"
        return choose_accel(self.binary, kernel, cache, self._accel_request)

    def prepare(self, spec: LaunchSpec) -> None:
        check_launch_files(spec, DISK_FORMATS)
        if spec.devices:
            raise VMMError(f"VM {spec.name}: {NO_VFIO}")
        run_dir = spec.run_dir.resolve()
        check_socket_paths(run_dir, [CONSOLE_SOCKET])
        run_dir.mkdir(parents=True, exist_ok=True)
        self._check_not_running(spec, run_dir)
        self._remove_stale(run_dir, [QMP_SOCKET, CONSOLE_SOCKET])

    async def start(self, spec: LaunchSpec) -> VMProcess:
        self.prepare(spec)
        choice = self.choose_accel(spec.kernel)
        args = build_qemu_args(spec, choice.accel, self.binary, host_tsc_khz())
        return await self._launch(spec, args, choice.accel)

    async def _controllable(self, vm: VMProcess) -> bool:
        try:
            await self._query_status(vm)
        except (OSError, QMPError, TimeoutError):
            return False
        return True

    @contextlib.asynccontextmanager
    async def _qmp(self, vm: VMProcess) -> AsyncIterator[QMPClient]:
        """A QMP session with the VM; QEMU serves one client at a time, so sessions queue."""
        lock = self._qmp_locks.setdefault(vm.run_dir, asyncio.Lock())
        async with lock:
            client = QMPClient(f"volant-{vm.name}")
            await asyncio.wait_for(client.connect(str(vm.run_dir / QMP_SOCKET)), QMP_TIMEOUT_S)
            try:
                yield client
            finally:
                await client.disconnect()

    async def _query_status(self, vm: VMProcess) -> str:
        async with self._qmp(vm) as qmp:
            reply = await asyncio.wait_for(qmp.execute("query-status"), QMP_TIMEOUT_S)
        assert isinstance(reply, dict)
        return str(reply["status"])

    async def status(self, vm: VMProcess) -> VMStatus:
        if process_alive(vm.pid, vm.run_dir):
            try:
                state = await self._query_status(vm)
            except Exception as error:  # QMP busy or going away: the process is what counts
                return VMStatus(VMState.RUNNING, vm.pid, detail=f"QMP unavailable: {error}")
            mapped = {"running": VMState.RUNNING, "shutdown": VMState.SHUTDOWN}
            return VMStatus(mapped.get(state, VMState.PAUSED), vm.pid, detail=state)
        return await self._ended_status(vm)

    async def _power_button(self, vm: VMProcess) -> None:
        async with self._qmp(vm) as qmp:
            await qmp.execute("system_powerdown")

    async def _quit(self, vm: VMProcess) -> None:
        async with self._qmp(vm) as qmp:
            await qmp.execute("quit")

    async def attach(self, name: str, run_dir: Path) -> VMProcess | None:
        run_dir = run_dir.resolve()
        found = self._find(run_dir)
        if found is None:
            return None
        pid, monitor_pid = found
        cmdline = psutil.Process(pid).cmdline()
        accel = Accel(cmdline[cmdline.index("-accel") + 1]) if "-accel" in cmdline else Accel.TCG
        return VMProcess(name, run_dir, pid, monitor_pid, accel)
