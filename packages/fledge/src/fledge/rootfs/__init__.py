"""OCI root disks: the staging tree, disk images, the image config, the build pipeline.

- :mod:`.staging`: the root filesystem being built, written without following symlinks, with
  the table of what each inode must be;
- :mod:`.disk`: ext4 (``mkfs.ext4 -d`` + ``debugfs``), squashfs, xfs and btrfs images;
- :mod:`.imageconfig`: the OCI image config as the manifest's workload;
- :mod:`.builder`: ``fledge build`` for ``strategy = "oci_rootfs"``;
- :mod:`.inspect`: listing a root disk without mounting it.
"""
