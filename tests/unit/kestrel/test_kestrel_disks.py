"""kestrel mounts the VM's extra disks (vm.json ``disks``) before the workload starts."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from kestrel.config import Disk, parse_config
from kestrel.disks import DiskMountError, mount_disk, mount_disks
from kestrel.errors import ConfigError
from kestrel.system import MS_RDONLY
from pluginspec import GuestDisk, GuestNetwork, VMContract, VMIdentity, parse_manifest
from pluginspec.contract import GuestBoot


def document(*disks: GuestDisk) -> dict:
    contract = VMContract(
        vm=VMIdentity(name="a", id="1"),
        hostname="a",
        manifest=parse_manifest({"name": "a", "version": "1", "initramfs": {"url": "/a"}}),
        workload=None,
        network=GuestNetwork(mode="isolated", mac=None),
        boot=GuestBoot(strategy="initramfs"),
        disks=list(disks),
        boot_epoch_ns=1,
    )
    loaded: dict = json.loads(contract.to_json())
    return loaded


def test_the_disks_of_vm_json_in_order() -> None:
    config = parse_config(
        document(
            GuestDisk(name="data", device="/dev/vda", fstype="ext4", mount="/data"),
            GuestDisk(name="raw", device="/dev/vdb"),
        )
    )
    assert config.disks == (
        Disk("data", "/dev/vda", "ext4", "/data", False),
        Disk("raw", "/dev/vdb", None, None, False),
    )
    assert parse_config(document()).disks == ()


def test_a_bad_disk_entry_names_its_key() -> None:
    bad = document(GuestDisk(name="d", device="/dev/vda", fstype="ext4", mount="/d"))
    bad["disks"][0]["device"] = "vda"
    with pytest.raises(ConfigError, match=r"disks\[0\]\.device: must be a device path"):
        parse_config(bad)


class Recorder:
    def __init__(self, error: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.error = error

    def __call__(self, *args: object) -> None:
        if self.error is not None:
            raise OSError(self.error, "failed")
        self.calls.append(args)


def test_each_disk_with_a_mount_path_is_mounted_there_read_only_if_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kestrel.disks.wait_for_disk", lambda disk: None)
    data, ro = str(tmp_path / "data"), str(tmp_path / "ro")
    disks = (
        Disk("data", "/dev/vda", "ext4", data, False),
        Disk("raw", "/dev/vdb", None, None, False),
        Disk("ro", "/dev/vdc", "ext4", ro, True),
    )
    mount, lines = Recorder(), []
    mounted = mount_disks(disks, lines.append, mount)
    assert [disk.name for disk in mounted] == ["data", "ro"]
    assert mount.calls == [
        ("/dev/vda", data, "ext4", 0, None),
        ("/dev/vdc", ro, "ext4", MS_RDONLY, None),
    ]
    assert Path(data).is_dir() and Path(ro).is_dir()
    assert lines[1] == f"disk ro: /dev/vdc (ext4) mounted on {ro} read-only"


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.EINVAL, "does not hold a valid ext4 filesystem"),
        (errno.ENODEV, "the kernel has no ext4 driver"),
        (errno.EROFS, "the disk is read-only"),
    ],
)
def test_a_failed_mount_says_which_disk_and_why(tmp_path: Path, code: int, hint: str) -> None:
    disk = Disk("data", "/dev/vda", "ext4", str(tmp_path / "data"), False)
    with pytest.raises(DiskMountError, match=f"disk data: cannot mount /dev/vda .*{hint}"):
        mount_disk(disk, Recorder(code))


def test_a_missing_device_is_a_boot_failure_after_the_timeout() -> None:
    from kestrel.disks import wait_for_disk

    disk = Disk("data", "/dev/does-not-exist", "ext4", "/data", False)
    with pytest.raises(DiskMountError, match=r"did not appear within 0\.05 s"):
        wait_for_disk(disk, timeout_s=0.05)
