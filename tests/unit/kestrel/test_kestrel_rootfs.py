"""Stage 1 of the rootfs strategy, in the parts that run without privileges: reading the
boot section and the stop signal, the mount plan, waiting for the device, mount points, the
image's /run, resolv.conf and the exec of stage 2. The switch itself is proved by the VM
tests (tests/vm/test_rootfs_boot.py)."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
from pathlib import Path

import pytest

from kestrel.config import Boot, parse_config, parse_signal
from kestrel.errors import ConfigError
from kestrel.rootfs import (
    ROOT_MOUNTED_ENV,
    STAGE_ENV,
    Mount,
    RootfsError,
    copy_tree,
    is_stage2,
    make_mount_points,
    mount_root,
    place_resolv_conf,
    root_mounted_ms,
    root_mounts,
    stage2_command,
    wait_for_device,
)
from kestrel.system import MS_NODEV, MS_NOSUID, MS_RDONLY
from pluginspec import GuestNetwork, GuestWorkload, VMContract, VMIdentity, parse_manifest
from pluginspec.contract import GuestBoot


def document(fstype: str = "ext4", stop_signal: str | None = None) -> dict:
    """A rootfs vm.json as volantd writes it (through pluginspec)."""
    workload = {"entrypoint": ["nginx"], "user": "101:101"}
    if stop_signal is not None:
        workload["stop_signal"] = stop_signal
    manifest = parse_manifest(
        {
            "name": "web",
            "version": "1",
            "rootfs": {"url": "/images/web.img", "fstype": fstype},
            "workload": workload,
        }
    )
    contract = VMContract(
        vm=VMIdentity(name="web-1", id="1"),
        hostname="web-1",
        manifest=manifest,
        workload=GuestWorkload.from_manifest(manifest),
        network=GuestNetwork(mode="isolated", mac=None),
        boot=GuestBoot(strategy="rootfs", root_device="/dev/vda", root_fstype=fstype),
        boot_epoch_ns=1,
    )
    loaded: dict = json.loads(contract.to_json())
    return loaded


# -- vm.json -------------------------------------------------------------------------------


def test_the_boot_section_names_the_root_device_and_filesystem() -> None:
    assert parse_config(document()).boot == Boot("rootfs", "/dev/vda", "ext4")
    assert parse_config(document("squashfs")).boot.root_fstype == "squashfs"


def test_initramfs_boots_and_documents_without_boot_stay_in_the_initramfs() -> None:
    initramfs = document()
    initramfs["boot"] = {"strategy": "initramfs", "root_device": None, "root_fstype": None}
    assert parse_config(initramfs).boot == Boot()
    del initramfs["boot"]
    assert parse_config(initramfs).boot == Boot()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": "nfs"}, "boot.strategy: must be one of initramfs, rootfs"),
        ({"root_device": "vda"}, "boot.root_device: must be a device path"),
        ({"root_fstype": "ntfs"}, "boot.root_fstype: must be one of ext4, squashfs"),
        ({"root_fstype": None}, "boot.root_fstype: must be one of"),
    ],
)
def test_a_bad_boot_section_names_the_key(change: dict, message: str) -> None:
    bad = document()
    bad["boot"].update(change)
    with pytest.raises(ConfigError, match=message):
        parse_config(bad)


def test_the_stop_signal_defaults_to_sigterm_and_takes_names_and_numbers() -> None:
    assert parse_config(document()).workload.stop_signal == signal.SIGTERM  # type: ignore[union-attr]
    quit_ = parse_config(document(stop_signal="quit")).workload
    assert quit_ is not None and quit_.stop_signal == signal.SIGQUIT
    assert parse_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3
    assert parse_signal("9") == parse_signal(9) == signal.SIGKILL
    bad = document()
    bad["workload"]["stop_signal"] = "SIGNOPE"
    with pytest.raises(ConfigError, match=r"workload\.stop_signal: unknown signal 'SIGNOPE'"):
        parse_config(bad)


# -- the mount plan ------------------------------------------------------------------------


def test_a_writable_filesystem_is_mounted_read_write_as_the_new_root() -> None:
    assert root_mounts("/dev/vda", "ext4") == [Mount("/dev/vda", "/newroot", "ext4")]


def test_a_squashfs_is_the_lower_layer_of_an_overlay_on_a_tmpfs() -> None:
    lower, writable, merged = root_mounts("/dev/vda", "squashfs", "/newroot", "/run/volant/root")
    assert lower == Mount("/dev/vda", "/run/volant/root/lower", "squashfs", MS_RDONLY)
    assert (writable.fstype, writable.target) == ("tmpfs", "/run/volant/root/rw")
    assert writable.flags == MS_NOSUID | MS_NODEV
    assert writable.then_make == ("/run/volant/root/rw/upper", "/run/volant/root/rw/work")
    assert (merged.fstype, merged.target) == ("overlay", "/newroot")
    assert merged.data == (
        "lowerdir=/run/volant/root/lower,upperdir=/run/volant/root/rw/upper,"
        "workdir=/run/volant/root/rw/work"
    )


def test_mount_root_makes_each_mount_point_and_the_layers_in_order(tmp_path: Path) -> None:
    calls = []

    def mount(source, target, fstype, flags, data) -> None:
        calls.append((source, target, fstype))
        assert Path(target).is_dir()

    root, layers = str(tmp_path / "newroot"), str(tmp_path / "layers")
    mount_root(root_mounts("/dev/vda", "squashfs", root, layers), mount)
    assert [call[2] for call in calls] == ["squashfs", "tmpfs", "overlay"]
    assert (tmp_path / "layers/rw/upper").is_dir() and (tmp_path / "layers/rw/work").is_dir()


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.EINVAL, "/dev/vda does not hold a valid ext4 filesystem"),
        (errno.ENODEV, "the kernel has no ext4 driver"),
        (errno.ENXIO, "no usable device /dev/vda"),
        (errno.EACCES, "Permission denied"),
    ],
)
def test_a_failed_mount_says_what_it_means(tmp_path: Path, code: int, hint: str) -> None:
    def mount(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    with pytest.raises(RootfsError) as failed:
        mount_root([Mount("/dev/vda", str(tmp_path / "newroot"), "ext4")], mount)
    assert str(failed.value).startswith(f"cannot mount /dev/vda (ext4) on {tmp_path}/newroot: ")
    assert hint in str(failed.value)


# -- the root device -----------------------------------------------------------------------


def test_a_device_that_never_appears_is_reported_after_the_timeout(tmp_path: Path) -> None:
    with pytest.raises(RootfsError, match=r"root device .*/vda did not appear within 0.05 s"):
        wait_for_device(str(tmp_path / "vda"), 0.05)


def test_a_path_that_is_not_a_block_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vda").write_bytes(b"")
    with pytest.raises(RootfsError, match="exists but is not a block device"):
        wait_for_device(str(tmp_path / "vda"), 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a block device needs root")
def test_a_block_device_is_found(tmp_path: Path) -> None:
    os.mknod(tmp_path / "vda", stat.S_IFBLK | 0o600, os.makedev(254, 0))
    assert wait_for_device(str(tmp_path / "vda"), 1) < 1


# -- the new root --------------------------------------------------------------------------


def test_missing_mount_points_are_created_and_reported(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    notes: list[str] = []
    make_mount_points(str(tmp_path), notes.append)
    assert stat.S_IMODE((tmp_path / "sys").stat().st_mode) == 0o555
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755
    assert notes == [
        "the image has no /dev: created it on the VM's root disk",
        "the image has no /sys: created it on the VM's root disk",
        "the image has no /run: created it on the VM's root disk",
    ]
    make_mount_points(str(tmp_path), notes.append)
    assert len(notes) == 3


def test_a_mount_point_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").symlink_to("/var/run")
    with pytest.raises(RootfsError, match="the image's /run is not a directory"):
        make_mount_points(str(tmp_path), print)


def test_the_images_run_is_copied_with_modes_owners_and_links(tmp_path: Path) -> None:
    image, target = tmp_path / "image", tmp_path / "tmpfs"
    (image / "lock").mkdir(parents=True)
    (image / "lock").chmod(0o1777)
    (image / "app.conf").write_text("x")
    (image / "app.conf").chmod(0o600)
    (image / "link").symlink_to("app.conf")
    os.mkfifo(image / "fifo")
    target.mkdir()
    assert copy_tree(str(image), str(target)) == 3
    assert stat.S_IMODE((target / "lock").stat().st_mode) == 0o1777
    assert (target / "app.conf").read_text() == "x"
    assert stat.S_IMODE((target / "app.conf").stat().st_mode) == 0o600
    assert os.readlink(target / "link") == "app.conf"
    assert not (target / "fifo").exists()


def test_resolv_conf_starts_from_the_images_file(tmp_path: Path) -> None:
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    (root / "etc").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.1\n")
    runtime.mkdir()
    notes: list[str] = []
    assert place_resolv_conf(str(root), str(runtime), notes.append) == f"{root}/etc/resolv.conf"
    assert (runtime / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
    assert notes == []


def test_a_missing_resolv_conf_becomes_an_empty_mount_point(tmp_path: Path) -> None:
    root, runtime = tmp_path / "root", tmp_path / "runtime"
    root.mkdir()
    runtime.mkdir()
    notes: list[str] = []
    assert place_resolv_conf(str(root), str(runtime), notes.append) == f"{root}/etc/resolv.conf"
    assert (root / "etc/resolv.conf").read_bytes() == b""
    assert (runtime / "resolv.conf").read_bytes() == b""
    assert notes == ["the image has no /etc/resolv.conf: created it (empty) on the VM's root disk"]


def test_a_resolv_conf_symlink_is_left_to_stage_2(tmp_path: Path) -> None:
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/resolv.conf").symlink_to("../run/resolvconf/resolv.conf")
    assert place_resolv_conf(str(tmp_path / "root"), str(tmp_path), print) is None


# -- stage 2 -------------------------------------------------------------------------------


def test_stage_2_runs_the_runtimes_loader_on_the_moved_agent_with_a_clean_environment() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "VOLANT_INIT_STARTED_MS": "2240", "X": "1",
               "PYTHONHOME": "/opt/volant/python"}  # fmt: skip
    stage2 = stage2_command("/run/volant", environ, 4067)
    assert stage2.program == "/run/volant/python/lib/ld-linux-x86-64.so.2"
    assert stage2.argv == [
        "kestrel", "--library-path", "/run/volant/python/lib", "/run/volant/python/bin/python3",
        "-s", "-S", "-B", "/run/volant/kestrel.pyz",
    ]  # fmt: skip
    assert stage2.env == {
        "PATH": "/bin", "HOME": "/root", "VOLANT_INIT_STARTED_MS": "2240",
        "PYTHONHOME": "/run/volant/python", STAGE_ENV: "2", ROOT_MOUNTED_ENV: "4067",
    }  # fmt: skip
    assert is_stage2(stage2.env) and root_mounted_ms(stage2.env) == 4067
    assert not is_stage2({}) and root_mounted_ms({}) is None
