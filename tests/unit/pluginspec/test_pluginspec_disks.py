"""Manifest ``disks``: images and new empty disks, where the guest mounts them."""

from __future__ import annotations

from typing import Any

import pytest

from pluginspec import SpecError, parse_manifest, parse_vm_contract
from pluginspec.manifest import size_bytes


def manifest(*disks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "app", "version": "1.0", "initramfs": {"url": "/a.cpio"}, "disks": list(disks)}


def issues(data: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_manifest(data)
    return {issue.path: issue.message for issue in info.value.issues}


def test_an_image_disk_mounted_read_only_and_a_new_empty_disk() -> None:
    m = parse_manifest(
        manifest(
            {"name": "ro", "source": "/r.img", "fstype": "ext4", "readonly": True, "mount": "/ro/"},
            {"name": "scratch", "size": "512m", "fstype": "ext4", "mount": "/scratch"},
        )
    )
    ro, scratch = m.disks
    assert (ro.mount, ro.read_only, ro.size) == ("/ro", True, None)
    assert (scratch.source, scratch.size, scratch.mount) == (None, "512M", "/scratch")
    assert size_bytes(scratch.size or "") == 512 << 20


def test_upstream_disks_still_parse_and_target_stays_informational() -> None:
    m = parse_manifest(
        manifest({"name": "d", "source": "/d.img", "format": "ext4", "target": "vdb"})
    )
    assert (m.disks[0].format, m.disks[0].fstype, m.disks[0].mount) == ("raw", "ext4", None)
    assert m.disks[0].target == "vdb"


def test_a_squashfs_disk_is_read_only_in_the_guest() -> None:
    m = parse_manifest(manifest({"name": "d", "source": "/d.sqfs", "fstype": "squashfs"}))
    assert m.disks[0].read_only and not m.disks[0].readonly


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("lots", "must be a size like 512M, 1G or 2T"),
        ("1.5G", "must be a size like 512M, 1G or 2T"),
        ("0", "must be a size like 512M, 1G or 2T"),
        ("100K", "must be between 1M and 16T"),
        ("17T", "must be between 1M and 16T"),
    ],
)
def test_bad_sizes(size: str, message: str) -> None:
    found = issues(manifest({"name": "d", "size": size, "fstype": "ext4"}))
    assert message in found["disks[0].size"]


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ("data", "must be an absolute path inside the guest"),
        ("/data/../etc", "must not contain '..'"),
        ("/", "where the guest keeps its own files"),
        ("/proc", "where the guest keeps its own files"),
        ("/etc/volant/", "where the guest keeps its own files"),
    ],
)
def test_bad_mount_points(mount: str, message: str) -> None:
    found = issues(manifest({"name": "d", "source": "/d.img", "fstype": "ext4", "mount": mount}))
    assert message in found["disks[0].mount"]


def test_disk_rules() -> None:
    found = issues(
        manifest(
            {"name": "none"},
            {"name": "both", "source": "/b.img", "size": "1G", "fstype": "ext4"},
            {"name": "xfs", "size": "1G", "fstype": "xfs"},
            {"name": "unformatted", "size": "1G"},
            {"name": "ro-empty", "size": "1G", "fstype": "ext4", "readonly": True},
            {"name": "q", "size": "1G", "fstype": "ext4", "format": "qcow2"},
            {"name": "where", "source": "/w.img", "mount": "/w"},
        )
    )
    assert found == {
        "disks[0].source": "give an image (source) or the size of a new empty disk",
        "disks[0].fstype": "is required for a new empty disk (the filesystem to make)",
        "disks[1].size": "is for new empty disks; a disk with a source has its size",
        "disks[2].fstype": "new empty disks are formatted as ext4; xfs needs a source image",
        "disks[3].fstype": "is required for a new empty disk (the filesystem to make)",
        "disks[4].readonly": "a new empty disk that cannot be written is of no use",
        "disks[5].format": "a new empty disk is a sparse raw file: leave format raw",
        "disks[6].fstype": "is required to mount the disk (mount is set)",
    }
    twice = manifest(
        {"name": "one", "source": "/o.img", "fstype": "ext4", "mount": "/w"},
        {"name": "two", "source": "/t.img", "fstype": "ext4", "mount": "/w/"},
    )
    assert issues(twice) == {"disks[1].mount": "disk 'one' is mounted at '/w' already"}


def test_the_contract_lists_disks_and_checks_mounts() -> None:
    base = {
        "vm": {"name": "a", "id": "1"}, "hostname": "a", "manifest": manifest(),
        "workload": None, "network": {"mode": "isolated", "mac": None},
        "boot": {"strategy": "initramfs"}, "boot_epoch_ns": 0,
    }  # fmt: skip
    disk = {"name": "d", "device": "/dev/vda", "fstype": "ext4", "mount": "/d", "readonly": True}
    assert parse_vm_contract({**base, "disks": [disk]}).disks[0].mount == "/d"
    assert parse_vm_contract(base).disks == []
    with pytest.raises(SpecError, match="fstype is required to mount the disk"):
        parse_vm_contract({**base, "disks": [{**disk, "fstype": None}]})
