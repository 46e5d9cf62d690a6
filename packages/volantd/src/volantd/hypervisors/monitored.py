"""What every driver whose VMM runs under a per-VM monitor process shares.

A :class:`MonitoredDriver` starts ``python -m volantd.vmm_monitor RUN_DIR -- VMM ARGS...``
(see volantd/vmm_monitor.py): the VMM is the monitor's child, bound to the starting process
by a lifeline pipe until :meth:`detach`, and found again after a daemon restart from the pid
files the monitor writes. Subclasses supply the VMM's command line, how to tell that it
answers its control socket, and how to ask it to power down and to quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import psutil

from volantd import vmm_monitor as monitor
from volantd.errors import VolantError
from volantd.hypervisors.base import (
    Accel,
    HypervisorDriver,
    LaunchSpec,
    VMProcess,
    VMState,
    VMStatus,
)

START_TIMEOUT_S = 15.0
QUIT_TIMEOUT_S = 2.0
MAX_UNIX_PATH = 107


class VMMError(VolantError):
    """The VMM could not be started or controlled."""


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


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def process_alive(pid: int, run_dir: Path) -> bool:
    """Whether `pid` is a live (not zombie) process working in `run_dir` (guards PID reuse)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and Path(process.cwd()) == run_dir
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def check_launch_files(spec: LaunchSpec, disk_formats: Sequence[str]) -> None:
    """Refuse a spec whose kernel, initrd or disks are missing, a disk of a format not in
    `disk_formats`, or resources no guest boots with."""
    if not spec.kernel.is_file():
        raise VMMError(f"kernel {spec.kernel} does not exist: run `volantd kernels fetch`")
    if spec.initrd is not None and not spec.initrd.is_file():
        raise VMMError(f"initrd {spec.initrd} does not exist")
    for disk in spec.disks:
        if disk.format not in disk_formats:
            raise VMMError(
                f"disk {disk.name} of VM {spec.name}: format {disk.format!r} is not one of "
                f"{', '.join(disk_formats)}"
            )
        if not disk.path.is_file():
            raise VMMError(f"disk {disk.name} of VM {spec.name}: {disk.path} does not exist")
    if spec.cpus < 1 or spec.memory_mb < 64:
        raise VMMError(f"VM {spec.name}: needs cpus >= 1 and memory_mb >= 64")


def check_socket_paths(run_dir: Path, names: Sequence[str]) -> None:
    """Refuse a run directory too deep for the unix sockets named `names` inside it."""
    longest = max(len(str(run_dir / name)) for name in names)
    if longest > MAX_UNIX_PATH:
        raise VMMError(
            f"run directory {run_dir} is too deep for unix sockets "
            f"({longest} > {MAX_UNIX_PATH} characters): use a shorter VOLANT_HOME"
        )


class MonitoredDriver(HypervisorDriver):
    """A driver whose VMMs run under `volantd.vmm_monitor` (one monitor per VM)."""

    vmm_label: str
    """The VMM's name in messages ("QEMU")."""
    control_socket: str
    """The VMM's control socket in the run directory: its existence is the first sign of life."""
    control_name: str
    """What that socket is called in messages ("QMP socket")."""

    def _check_not_running(self, spec: LaunchSpec, run_dir: Path) -> None:
        pid = read_pid(run_dir / monitor.VMM_PID_FILE)
        if pid is not None and process_alive(pid, run_dir):
            raise VMMError(f"VM {spec.name} is already running ({self.vmm_label} pid {pid})")

    @staticmethod
    def _remove_stale(run_dir: Path, names: Sequence[str]) -> None:
        for stale in (*names, monitor.VMM_PID_FILE, monitor.EXIT_FILE):
            (run_dir / stale).unlink(missing_ok=True)

    async def _launch(
        self,
        spec: LaunchSpec,
        command: Sequence[str],
        accel: Accel,
        *,
        monitor_options: Sequence[str] = (),
        then: Callable[[VMProcess], Awaitable[None]] | None = None,
    ) -> VMProcess:
        """Run `command` under a monitor in the spec's run directory and wait until the VMM
        answers (`_controllable`), then run `then`; any failure kills the VMM first."""
        run_dir = spec.run_dir.resolve()
        read_end, lifeline = os.pipe()
        try:
            with open(run_dir / "monitor.log", "ab") as monitor_log:
                process = subprocess.Popen(
                    [sys.executable, "-m", monitor.__name__, str(run_dir), *monitor_options,
                     "--", *command],
                    stdin=read_end,
                    stdout=monitor_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        except BaseException:
            os.close(lifeline)
            raise
        finally:
            os.close(read_end)
        vm = VMProcess(spec.name, run_dir, 0, process.pid, accel, lifeline)
        try:
            vm.pid = await self._wait_until_controllable(vm, process)
            if then is not None:
                await then(vm)
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
                    f"{self.vmm_label} for VM {vm.name} exited during start:\n"
                    f"{tail(vm.run_dir / monitor.VMM_LOG_FILE)}"
                )
            pid = read_pid(vm.run_dir / monitor.VMM_PID_FILE)
            if pid is not None and (vm.run_dir / self.control_socket).exists():
                vm.pid = pid
                if await self._controllable(vm):
                    return pid
            await asyncio.sleep(0.02)
        raise VMMError(
            f"{self.vmm_label} for VM {vm.name} did not open its {self.control_name} "
            f"in {START_TIMEOUT_S} s"
        )

    @abstractmethod
    async def _controllable(self, vm: VMProcess) -> bool:
        """Whether the VMM answers on its control socket yet (never raises)."""

    @abstractmethod
    async def _power_button(self, vm: VMProcess) -> None:
        """Ask the guest to power down (ACPI power button)."""

    @abstractmethod
    async def _quit(self, vm: VMProcess) -> None:
        """Ask the VMM to end now, guest or not."""

    def detach(self, vm: VMProcess) -> None:
        if vm.lifeline is not None:
            os.write(vm.lifeline, b"detach\n")
            os.close(vm.lifeline)
            vm.lifeline = None

    def alive(self, vm: VMProcess) -> bool:
        return bool(vm.pid) and process_alive(vm.pid, vm.run_dir)

    def _exit_status(self, vm: VMProcess) -> VMStatus:
        try:
            record = json.loads((vm.run_dir / monitor.EXIT_FILE).read_text())
        except (OSError, ValueError):
            return VMStatus(VMState.CRASHED, detail="VMM gone without an exit record")
        code = record.get("returncode")
        state = VMState.STOPPED if code == 0 else VMState.CRASHED
        return VMStatus(state, exit_code=code, detail=str(record.get("reason", "")))

    async def _ended_status(self, vm: VMProcess) -> VMStatus:
        """The status of a VM whose VMM is gone."""
        # The monitor writes exit.json right after reaping the VMM; give it that moment.
        await wait_for_exit(vm.monitor_pid, 5.0)
        return self._exit_status(vm)

    async def stop(self, vm: VMProcess, timeout: float = 10.0) -> VMStatus:
        """The power button, `timeout` seconds; then the VMM's own quit; then SIGKILL."""
        if process_alive(vm.pid, vm.run_dir):
            with contextlib.suppress(Exception):
                await self._power_button(vm)
            if not await wait_for_exit(vm.pid, timeout):
                with contextlib.suppress(Exception):
                    await self._quit(vm)
                if not await wait_for_exit(vm.pid, QUIT_TIMEOUT_S):
                    await self._kill(vm)
        await wait_for_exit(vm.monitor_pid, 5.0)
        self._close_lifeline(vm)
        return self._exit_status(vm)

    async def _kill(self, vm: VMProcess) -> None:
        """Force the VMM off and wait for its monitor to exit; used on every failure path."""
        self._close_lifeline(vm)
        if vm.pid and process_alive(vm.pid, vm.run_dir):
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

    def _find(self, run_dir: Path) -> tuple[int, int] | None:
        """The (VMM, monitor) pids of the VM a previous daemon left running in `run_dir`."""
        pid = read_pid(run_dir / monitor.VMM_PID_FILE)
        monitor_pid = read_pid(run_dir / monitor.MONITOR_PID_FILE)
        if pid is None or monitor_pid is None or not process_alive(pid, run_dir):
            return None
        return pid, monitor_pid
