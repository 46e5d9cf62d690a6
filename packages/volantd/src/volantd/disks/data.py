"""A plugin's extra disks (manifest ``disks``) for one VM, attached after the root disk.

* A disk with a ``source`` image is cached and checked like the plugin's other artifacts
  (``disk:<name>``). A writable one gets a qcow2 overlay in the VM's run directory, named
  after the disk (``disk-<name>.qcow2``), over the cached image: the guest's writes stay in
  the VM's overlay and survive restarts, the cached image is never written. A ``readonly``
  disk (or a squashfs) is the cached image itself, attached read-only.
* A disk with only a ``size`` is a new empty disk: a sparse raw file in the run directory
  (``disk-<name>.raw``) formatted with ``mkfs.ext4`` on the host before the VM's first boot
  (no root needed, no tool in the guest), kept across restarts.

Deleting the VM removes its run directory, and every per-VM disk file with it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pluginspec import Disk
from pluginspec.manifest import size_bytes
from volantd.disks.overlay import DiskError, ensure_overlay
from volantd.hosttools import require_tool
from volantd.hypervisors.base import DiskSpec

MKFS_TIMEOUT_S = 120


def overlay_path(run_dir: Path, disk: Disk) -> Path:
    """Where a VM keeps its copy-on-write overlay of a writable disk image."""
    return run_dir / f"disk-{disk.name}.qcow2"


def empty_disk_path(run_dir: Path, disk: Disk) -> Path:
    """Where a VM keeps a new empty disk."""
    return run_dir / f"disk-{disk.name}.raw"


def data_disks(
    run_dir: Path, disks: Sequence[Disk], images: Mapping[str, Path]
) -> tuple[DiskSpec, ...]:
    """The VM's extra disks in manifest order; ``images``: the cached image of each disk
    with a source, by disk name. Creates what the VM's first start needs."""
    return tuple(data_disk(run_dir, disk, images.get(disk.name)) for disk in disks)


def data_disk(run_dir: Path, disk: Disk, image: Path | None) -> DiskSpec:
    """One extra disk of the VM whose run directory is ``run_dir`` (see the module)."""
    name = f"disk:{disk.name}"
    if disk.source is None:
        path = empty_disk_path(run_dir, disk)
        if not path.is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            make_empty_disk(path, size_bytes(disk.size or "0"), disk.fstype or "ext4", disk.name)
        return DiskSpec(path, "raw", name=name)
    if image is None or not image.is_file():
        raise DiskError(
            f"the image of disk {disk.name} is no longer in the artifact cache; install the "
            "plugin again"
        )
    if disk.read_only:
        return DiskSpec(image, disk.format, readonly=True, name=name)
    overlay = overlay_path(run_dir, disk)
    ensure_overlay(overlay, image, disk.format, f"disk {disk.name} ({overlay})")
    return DiskSpec(overlay, "qcow2", name=name)


def make_empty_disk(path: Path, size: int, fstype: str, label: str) -> Path:
    """A sparse raw file of ``size`` bytes holding an empty ``fstype`` filesystem, atomically.

    The filesystem's root directory belongs to the guest's root (``root_owner=0:0``) whoever
    runs volantd.
    """
    if fstype != "ext4":
        raise DiskError(f"cannot make a new {fstype} disk: new empty disks are ext4")
    mkfs = require_tool("mkfs.ext4", "format new empty disks (e2fsprogs)")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as file:
            file.truncate(size)
        command = [mkfs, "-q", "-F", "-L", label[:16], "-E", "root_owner=0:0", str(partial)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=MKFS_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise DiskError(
                f"formatting the new disk {path} failed: {(result.stderr or result.stdout).strip()}"
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
