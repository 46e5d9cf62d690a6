"""Guest disks: the root disk of a rootfs plugin, as a per-VM copy-on-write overlay."""

from volantd.disks.overlay import (
    OVERLAY_NAME,
    DiskError,
    create_overlay,
    qcow2_backing,
    root_disk,
)

__all__ = ["OVERLAY_NAME", "DiskError", "create_overlay", "qcow2_backing", "root_disk"]
