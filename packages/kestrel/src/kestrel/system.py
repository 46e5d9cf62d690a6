"""Whole-machine operations: guest uptime, hostname, sync and power-off."""

from __future__ import annotations

import os
import socket
import time

_RB_POWER_OFF = 0x4321FEDC
_RB_DISABLE_CAD = 0


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


def _reboot(command: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.reboot(ctypes.c_int(command)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


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
