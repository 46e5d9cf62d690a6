"""Whole-machine operations: guest uptime, hostname, mounts, sync and power-off."""

from __future__ import annotations

import os
import socket
import stat
import time
from typing import TYPE_CHECKING

from .errors import KestrelError

if TYPE_CHECKING:
    import ctypes

_RB_POWER_OFF = 0x4321FEDC
_RB_DISABLE_CAD = 0

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MNT_DETACH = 0x2


def is_pid1() -> bool:
    """Whether this process is the init of its PID namespace (inside a VM: the guest init)."""
    return os.getpid() == 1


def uptime_ms() -> int:
    """Guest uptime in milliseconds: ``CLOCK_BOOTTIME``, the clock behind ``/proc/uptime``."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


def set_hostname(name: str) -> None:
    """Set the kernel hostname (needs CAP_SYS_ADMIN in the UTS namespace)."""
    socket.sethostname(name)


def sync() -> None:
    """Flush every filesystem's dirty data to its device."""
    os.sync()


def _libc() -> ctypes.CDLL:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, filename: str | None = None) -> None:
    if result != 0:
        import ctypes

        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), filename)


def _reboot(command: int) -> None:
    import ctypes

    _check(_libc().reboot(ctypes.c_int(command)))


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """``mount(2)``: the standard library has no binding; OSError names ``target``."""
    import ctypes

    def text(value: str | None) -> bytes | None:
        return None if value is None else os.fsencode(value)

    result = _libc().mount(
        text(source), text(target), text(fstype), ctypes.c_ulong(flags), text(data)
    )
    _check(result, target)


def unmount(target: str, flags: int = 0) -> None:
    """``umount2(2)`` (``MNT_DETACH``: lazily)."""
    import ctypes

    _check(_libc().umount2(os.fsencode(target), ctypes.c_int(flags)), target)


def disable_ctrl_alt_del() -> None:
    """Make Ctrl-Alt-Del a SIGINT to PID 1 (a clean shutdown) instead of a hard reboot.

    The ``reboot(2)`` call, not ``/proc/sys/kernel/ctrl-alt-del``: in a PID namespace the
    call fails harmlessly where the file would change the whole machine's setting.
    """
    _reboot(_RB_DISABLE_CAD)


def power_off() -> None:
    """Power the machine off now: ``reboot(RB_POWER_OFF)``. Only PID 1 may call this.

    Inside a VM started with ACPI this ends the VMM; in a PID namespace it ends the
    namespace.
    """
    if not is_pid1():
        raise RuntimeError("power_off() is only for PID 1")
    _reboot(_RB_POWER_OFF)


class DeviceWaitError(KestrelError):
    """A device did not become usable: ``appeared`` tells a timeout from a wrong file type."""

    def __init__(self, path: str, appeared: bool) -> None:
        super().__init__(path)
        self.appeared = appeared


def wait_for_block_device(path: str, timeout_s: float, poll_s: float = 0.01) -> float:
    """Wait until ``path`` is a block device (the kernel probes disks asynchronously);
    the seconds waited. DeviceWaitError when it is something else, or on timeout."""
    started = time.monotonic()
    while True:
        try:
            if stat.S_ISBLK(os.stat(path).st_mode):
                return time.monotonic() - started
            raise DeviceWaitError(path, appeared=True)
        except FileNotFoundError:
            pass
        if time.monotonic() - started >= timeout_s:
            raise DeviceWaitError(path, appeared=False)
        time.sleep(poll_s)
