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
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
from qemu.qmp import QMPClient, QMPError

from volantd import paths
from volantd import vmm_monitor as monitor
from volantd.errors import VolantError
from volantd.hosttools import require_tool
from volantd.hypervisors.accel import AccelChoice, choose_accel, kvm_device_usable
from volantd.hypervisors.base import (
    Accel,
    Capabilities,
    DiskSpec,
    HypervisorDriver,
    LaunchSpec,
    NetworkMode,
    NetworkSpec,
    VMProcess,
    VMState,
    VMStatus,
)

QEMU_BINARY = "qemu-system-x86_64"
TCG_CPU = "max,erms=off,fsrm=off"
"""The emulated CPU: everything TCG offers except fast string moves, which it emulates slowly;
without them the guest kernel and libc copy and clear memory with ordinary loops, and the
kernel unpacks a 22 MiB initramfs about a third faster (docs/hypervisors.md)."""
QMP_SOCKET = "qmp.sock"
CONSOLE_SOCKET = "console.sock"
SERIAL_LOG = "serial.log"
MAX_UNIX_PATH = 107
DISK_FORMATS = ("raw", "qcow2")
START_TIMEOUT_S = 15.0
QMP_TIMEOUT_S = 5.0


class VMMError(VolantError):
    """The VMM could not be started or controlled."""


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


async def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process `pid` has exited (reaping it if it is our child); False on timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await asyncio.wait_for(exited, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int, run_dir: Path) -> bool:
    """Whether `pid` is a live (not zombie) process working in `run_dir` (guards PID reuse)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and Path(process.cwd()) == run_dir
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


class QemuDriver(HypervisorDriver):
    """Runs VMs as QEMU microvm processes, each under its own monitor process."""

    name = "qemu"

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
        """microvm's devices are virtio-mmio: the transport, plus the NIC and disk drivers."""
        return (
            "virtio_mmio",
            *(("virtio_net",) if network else ()),
            *(("virtio_blk",) if disks else ()),
        )

    def capabilities(self) -> Capabilities:
        try:
            self.binary  # noqa: B018 - resolving the binary is the availability check
        except VolantError as error:
            return Capabilities(self.name, available=False, reason=str(error))
        kvm, why = kvm_device_usable()
        return Capabilities(
            self.name,
            available=True,
            reason=why if kvm else f"{why}; guests run under TCG",
            vsock=Path("/dev/vhost-vsock").exists(),
            user_networking=True,
        )

    def choose_accel(self, kernel: Path) -> AccelChoice:
        cache = (self._cache_dir or paths.cache_dir()) / "accel-probe.json"
        return choose_accel(self.binary, kernel, cache, self._accel_request)

    def prepare(self, spec: LaunchSpec) -> None:
        if not spec.kernel.is_file():
            raise VMMError(f"kernel {spec.kernel} does not exist: run `volantd kernels fetch`")
        if spec.initrd is not None and not spec.initrd.is_file():
            raise VMMError(f"initrd {spec.initrd} does not exist")
        for disk in spec.disks:
            if disk.format not in DISK_FORMATS:
                raise VMMError(
                    f"disk {disk.name} of VM {spec.name}: format {disk.format!r} is not one of "
                    f"{', '.join(DISK_FORMATS)}"
                )
            if not disk.path.is_file():
                raise VMMError(f"disk {disk.name} of VM {spec.name}: {disk.path} does not exist")
        if spec.cpus < 1 or spec.memory_mb < 64:
            raise VMMError(f"VM {spec.name}: needs cpus >= 1 and memory_mb >= 64")
        run_dir = spec.run_dir.resolve()
        longest = len(str(run_dir / CONSOLE_SOCKET))
        if longest > MAX_UNIX_PATH:
            raise VMMError(
                f"run directory {run_dir} is too deep for unix sockets "
                f"({longest} > {MAX_UNIX_PATH} characters): use a shorter VOLANT_HOME"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        pid = _read_pid(run_dir / monitor.VMM_PID_FILE)
        if pid is not None and _alive(pid, run_dir):
            raise VMMError(f"VM {spec.name} is already running (QEMU pid {pid})")
        for stale in (QMP_SOCKET, CONSOLE_SOCKET, monitor.VMM_PID_FILE, monitor.EXIT_FILE):
            (run_dir / stale).unlink(missing_ok=True)

    async def start(self, spec: LaunchSpec) -> VMProcess:
        self.prepare(spec)
        choice = self.choose_accel(spec.kernel)
        args = build_qemu_args(spec, choice.accel, self.binary, host_tsc_khz())
        run_dir = spec.run_dir.resolve()
        read_end, lifeline = os.pipe()
        try:
            with open(run_dir / "monitor.log", "ab") as monitor_log:
                process = subprocess.Popen(
                    [sys.executable, "-m", monitor.__name__, str(run_dir), "--", *args],
                    stdin=read_end,
                    stdout=monitor_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except BaseException:
            os.close(lifeline)
            raise
        finally:
            os.close(read_end)
        vm = VMProcess(spec.name, run_dir, 0, process.pid, choice.accel, lifeline)
        try:
            vm.pid = await self._wait_until_controllable(vm, process)
        except BaseException:
            await self._kill(vm)
            raise
        return vm

    async def _wait_until_controllable(
        self, vm: VMProcess, process: subprocess.Popen[bytes]
    ) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline:
            if process.poll() is not None:
                raise VMMError(
                    f"QEMU for VM {vm.name} exited during start:\n"
                    f"{_tail(vm.run_dir / monitor.VMM_LOG_FILE)}"
                )
            pid = _read_pid(vm.run_dir / monitor.VMM_PID_FILE)
            if pid is not None and (vm.run_dir / QMP_SOCKET).exists():
                vm.pid = pid
                with contextlib.suppress(OSError, QMPError, TimeoutError):
                    await self._query_status(vm)
                    return pid
            await asyncio.sleep(0.02)
        raise VMMError(f"QEMU for VM {vm.name} did not open its QMP socket in {START_TIMEOUT_S} s")

    def detach(self, vm: VMProcess) -> None:
        if vm.lifeline is not None:
            os.write(vm.lifeline, b"detach\n")
            os.close(vm.lifeline)
            vm.lifeline = None

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
        if _alive(vm.pid, vm.run_dir):
            try:
                state = await self._query_status(vm)
            except Exception as error:  # QMP busy or going away: the process is what counts
                return VMStatus(VMState.RUNNING, vm.pid, detail=f"QMP unavailable: {error}")
            mapped = {"running": VMState.RUNNING, "shutdown": VMState.SHUTDOWN}
            return VMStatus(mapped.get(state, VMState.PAUSED), vm.pid, detail=state)
        # The monitor writes exit.json right after reaping QEMU; give it that moment.
        await wait_for_exit(vm.monitor_pid, 5.0)
        return self._exit_status(vm)

    def alive(self, vm: VMProcess) -> bool:
        return bool(vm.pid) and _alive(vm.pid, vm.run_dir)

    def _exit_status(self, vm: VMProcess) -> VMStatus:
        try:
            record = json.loads((vm.run_dir / monitor.EXIT_FILE).read_text())
        except (OSError, ValueError):
            return VMStatus(VMState.CRASHED, detail="VMM gone without an exit record")
        code = record.get("returncode")
        state = VMState.STOPPED if code == 0 else VMState.CRASHED
        return VMStatus(state, exit_code=code, detail=str(record.get("reason", "")))

    async def stop(self, vm: VMProcess, timeout: float = 10.0) -> VMStatus:
        if _alive(vm.pid, vm.run_dir):
            with contextlib.suppress(Exception):
                async with self._qmp(vm) as qmp:
                    await qmp.execute("system_powerdown")
            if not await wait_for_exit(vm.pid, timeout):
                with contextlib.suppress(Exception):
                    async with self._qmp(vm) as qmp:
                        await qmp.execute("quit")
                if not await wait_for_exit(vm.pid, 2.0):
                    await self._kill(vm)
        await wait_for_exit(vm.monitor_pid, 5.0)
        self._close_lifeline(vm)
        return self._exit_status(vm)

    async def _kill(self, vm: VMProcess) -> None:
        """Force the VMM off and wait for its monitor to exit; used on every failure path."""
        self._close_lifeline(vm)
        if vm.pid and _alive(vm.pid, vm.run_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(vm.pid, signal.SIGKILL)
            await wait_for_exit(vm.pid, 5.0)
        if not await wait_for_exit(vm.monitor_pid, 5.0):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(vm.monitor_pid, signal.SIGKILL)
            await wait_for_exit(vm.monitor_pid, 5.0)

    def _close_lifeline(self, vm: VMProcess) -> None:
        if vm.lifeline is not None:
            os.close(vm.lifeline)
            vm.lifeline = None

    async def attach(self, name: str, run_dir: Path) -> VMProcess | None:
        run_dir = run_dir.resolve()
        pid = _read_pid(run_dir / monitor.VMM_PID_FILE)
        monitor_pid = _read_pid(run_dir / monitor.MONITOR_PID_FILE)
        if pid is None or monitor_pid is None or not _alive(pid, run_dir):
            return None
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        accel = Accel(cmdline[cmdline.index("-accel") + 1]) if "-accel" in cmdline else Accel.TCG
        return VMProcess(name, run_dir, pid, monitor_pid, accel)
