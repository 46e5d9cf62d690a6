"""A rootfs plugin's root disk: the cached image, behind a per-VM copy-on-write overlay.

Every VM of a plugin boots the same verified image from the artifact cache. That file is
shared and never written: a writable root (ext4, xfs, btrfs) gets a qcow2 overlay in the VM's
run directory whose backing file is the cached image (QEMU opens a backing file read-only),
created on the VM's first start and kept across stop, start and restart, so the guest's
writes survive a restart of the same VM; deleting the VM removes its run directory and the
overlay with it. A squashfs root is read-only in the guest anyway (kestrel puts a tmpfs
overlay over it), so the cached image is attached read-only, with no file per VM.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

from volantd.errors import VolantError
from volantd.hosttools import require_tool
from volantd.hypervisors.base import DiskSpec

OVERLAY_NAME = "root.qcow2"
READ_ONLY_FILESYSTEMS = frozenset({"squashfs"})
QCOW2_MAGIC = b"QFI\xfb"
QEMU_IMG_TIMEOUT_S = 60


class DiskError(VolantError):
    """A guest disk could not be prepared."""


def qcow2_backing(path: Path) -> str | None:
    """The backing file named in a qcow2 image's header (None: no backing file).

    Read from the header itself (magic, version, backing file offset and size, big-endian),
    so checking an overlay on every start costs no ``qemu-img`` run.
    """
    with open(path, "rb") as image:
        header = image.read(20)
        if len(header) < 20 or header[:4] != QCOW2_MAGIC:
            raise DiskError(f"{path} is not a qcow2 image")
        offset, size = struct.unpack(">QI", header[8:20])
        if offset == 0 or size == 0:
            return None
        image.seek(offset)
        return image.read(size).decode("utf-8", "surrogateescape")


def create_overlay(overlay: Path, backing: Path, backing_format: str) -> Path:
    """``qemu-img create -f qcow2 -F <format> -b <backing> <overlay>``, atomically."""
    qemu_img = require_tool("qemu-img", "create the copy-on-write overlays of root disks")
    partial = overlay.with_name(f".{overlay.name}.{os.getpid()}.partial")
    command = [
        qemu_img, "create", "-q", "-f", "qcow2", "-F", backing_format,
        "-b", str(backing.resolve()), str(partial),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise DiskError(
                f"creating the overlay {overlay} on {backing} failed: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        os.replace(partial, overlay)
    finally:
        partial.unlink(missing_ok=True)
    return overlay


def root_disk(run_dir: Path, image: Path, image_format: str, fstype: str) -> DiskSpec:
    """The root disk of a VM whose run directory is ``run_dir``, booting the cached ``image``.

    Creates the VM's overlay on its first start; later starts reuse it, as long as the image
    it was made from is still cached.
    """
    if fstype in READ_ONLY_FILESYSTEMS:
        return DiskSpec(image, image_format, readonly=True, name="root")
    overlay = run_dir / OVERLAY_NAME
    ensure_overlay(overlay, image, image_format, f"the root disk {overlay}")
    return DiskSpec(overlay, "qcow2", name="root")


def ensure_overlay(overlay: Path, image: Path, image_format: str, what: str) -> None:
    """Create ``overlay`` over ``image`` on a VM's first start; on later starts keep it, as
    long as the image it was made from is still cached (``what`` names it in the error)."""
    if not overlay.is_file():
        overlay.parent.mkdir(parents=True, exist_ok=True)
        create_overlay(overlay, image, image_format)
        return
    backing = qcow2_backing(overlay)
    if backing is not None and not Path(backing).is_file():
        raise DiskError(
            f"{what} is an overlay of {backing}, which is no longer in the artifact cache; "
            "reinstall the plugin version this VM was created from, or delete the VM and "
            "create it again"
        )
