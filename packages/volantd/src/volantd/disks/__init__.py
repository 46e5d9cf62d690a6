"""Guest disks: a rootfs plugin's root disk and a plugin's extra disks, as per-VM files."""

from volantd.disks.data import data_disk, data_disks, empty_disk_path, overlay_path
from volantd.disks.overlay import (
    OVERLAY_NAME,
    DiskError,
    create_overlay,
    qcow2_backing,
    root_disk,
)

__all__ = [
    "OVERLAY_NAME",
    "DiskError",
    "create_overlay",
    "data_disk",
    "data_disks",
    "empty_disk_path",
    "overlay_path",
    "qcow2_backing",
    "root_disk",
]
