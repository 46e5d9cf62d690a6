"""Building small busybox guests and watching them from the host."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pluginspec.cpio import CpioEntry, write_cpio

# The NIC gets its address from QEMU's user-mode DHCP server, proving traffic flows both
# ways through virtio-net; udhcpc hands the lease to this script.
UDHCPC_SCRIPT = """#!/bin/busybox sh
case "$1" in
  bound|renew) ip addr add "$ip/$mask" dev "$interface" && echo "volant-test: lease $ip/$mask" ;;
esac
"""

INIT_PROLOGUE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "volant-test: init started, uptime $(cut -d' ' -f1 /proc/uptime)"
"""


def load_modules_script(modules: tuple[str, ...]) -> str:
    """Shell lines that insmod each module in order and report each result on the console."""
    lines = []
    for path in modules:
        name = PurePosixPath(path).name.removesuffix(".ko")
        lines.append(
            f'insmod {path} && echo "volant-test: loaded {name}" '
            f'|| echo "volant-test: FAILED to load {name}"'
        )
    return "\n".join(lines) + "\n"


def busybox_initramfs(
    destination: Path, init_body: str, files: dict[str, bytes] | None = None
) -> Path:
    """A gzip initramfs holding static busybox, `/init` (prologue + `init_body`) and `files`."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is required: apt-get install busybox-static")
    entries = [
        CpioEntry.file("/bin/busybox", Path(busybox).read_bytes(), 0o755),
        CpioEntry.file("/init", (INIT_PROLOGUE + init_body).encode(), 0o755),
        CpioEntry.file("/bin/udhcpc-script", UDHCPC_SCRIPT.encode(), 0o755),
    ]
    entries += [CpioEntry.directory(d) for d in ("/proc", "/sys", "/dev", "/tmp")]
    entries += [CpioEntry.file(path, data) for path, data in (files or {}).items()]
    write_cpio(destination, entries, compression="gzip")
    return destination


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def console_line(log: Path, marker: bytes, started: float, timeout: float = 300) -> bytes:
    """Poll a serial log until a line contains `marker` (spaces ignored); return that line.

    `started` is the `time.monotonic()` the wait is measured from, for the timeout.
    """
    needle = marker.replace(b" ", b"")
    while True:
        data = log.read_bytes() if log.exists() else b""
        for line in data.splitlines():
            if needle in line.replace(b" ", b""):
                return line
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{marker!r} never appeared on the console in {log}")
        await asyncio.sleep(0.005)
