"""Mounting the VM's extra disks (``vm.json`` ``disks``) before the workload starts.

volantd attaches a plugin's disks after the root disk and tells the agent which device each
one is (``/dev/vdb``, ...) and where to mount it. Each disk with a ``mount`` path is mounted
there (the directory is created), read-only when the disk is, with the filesystem the
manifest names. A failure stops the boot (``boot_failed``): a workload that expects its data
at ``/data`` must not start on an empty directory.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable

from .config import Disk
from .errors import KestrelError
from .system import MS_RDONLY, DeviceWaitError, wait_for_block_device
from .system import mount as _mount

DEVICE_TIMEOUT_S = 10.0

MountFunction = Callable[[str | None, str, str | None, int, str | None], None]


class DiskMountError(KestrelError):
    """A disk could not be found or mounted."""


def wait_for_disk(disk: Disk, timeout_s: float = DEVICE_TIMEOUT_S, poll_s: float = 0.01) -> None:
    """Wait until the disk's device is a block device; DiskMountError on timeout."""
    try:
        wait_for_block_device(disk.device, timeout_s, poll_s)
    except DeviceWaitError as error:
        if error.appeared:
            raise DiskMountError(f"disk {disk.name}: {disk.device} is not a block device") from None
        raise DiskMountError(
            f"disk {disk.name}: {disk.device} did not appear within {timeout_s:g} s "
            "(virtio_blk not loaded, or fewer disks attached than vm.json lists)"
        ) from None


def mount_disk(disk: Disk, mount: MountFunction = _mount) -> None:
    """Mount one disk at its ``mount`` path (created first), read-only if the disk is."""
    assert disk.mount is not None
    try:
        os.makedirs(disk.mount, mode=0o755, exist_ok=True)
    except OSError as error:
        raise DiskMountError(
            f"disk {disk.name}: cannot create the mount point {disk.mount}: "
            f"{error.strerror or error}"
        ) from None
    flags = MS_RDONLY if disk.readonly else 0
    try:
        mount(disk.device, disk.mount, disk.fstype, flags, None)
    except OSError as error:
        raise DiskMountError(mount_failure(disk, error)) from None


def mount_failure(disk: Disk, error: OSError) -> str:
    """What a failed disk mount means, in words an operator can act on."""
    what = f"disk {disk.name}: cannot mount {disk.device} ({disk.fstype}) on {disk.mount}"
    if error.errno == errno.ENODEV:
        hint = f"the kernel has no {disk.fstype} driver (module not loaded or not built)"
    elif error.errno in (errno.EINVAL, errno.EUCLEAN, errno.EIO):
        hint = (
            f"{disk.device} does not hold a valid {disk.fstype} filesystem: check the disk's "
            "fstype in the plugin manifest"
        )
    elif error.errno == errno.EROFS:
        hint = "the disk is read-only: set readonly = true in the plugin manifest"
    else:
        hint = error.strerror or str(error)
    return f"{what}: {hint} ({errno.errorcode.get(error.errno or 0, error.errno)})"


def mount_disks(
    disks: Iterable[Disk], report: Callable[[str], None], mount: MountFunction = _mount
) -> list[Disk]:
    """Mount every disk that has a ``mount`` path, in order; the disks mounted."""
    mounted = []
    for disk in disks:
        if disk.mount is None:
            continue
        wait_for_disk(disk)
        mount_disk(disk, mount)
        report(
            f"disk {disk.name}: {disk.device} ({disk.fstype}) mounted on {disk.mount}"
            + (" read-only" if disk.readonly else "")
        )
        mounted.append(disk)
    return mounted
