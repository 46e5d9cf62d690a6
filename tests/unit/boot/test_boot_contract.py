"""Boot media for one VM: its vm.json and initrd."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pluginspec import parse_manifest
from pluginspec.cpio import CpioEntry, cpio_bytes, write_cpio
from support.archives import cpio_files
from volantd.boot.contract import (
    agent_guest_port,
    filesystem_drivers,
    guest_contract,
    guest_network,
    mac_for,
    prepare_initrd,
    virtio_disk_device,
)
from volantd.errors import VolantError
from volantd.hypervisors import QemuDriver
from volantd.kernels import KernelEntry

MANIFEST = {
    "name": "web",
    "version": "1.0.0",
    "initramfs": {"url": "/images/web.cpio.zst"},
    "workload": {
        "entrypoint": ["/bin/httpd"],
        "args": ["-f", "-p", "80"],
        "base_url": "http://127.0.0.1:80",
        "restart": "always",
    },
    "health_check": {"endpoint": "/", "timeout_ms": 5000},
}


def kernel(tmp_path: Path, modules_cpio: Path | None) -> KernelEntry:
    fields = KernelEntry.__dataclass_fields__
    values = {name: None for name in fields}
    values |= {
        "name": "k", "version": "6.1.0-test", "image": tmp_path / "vmlinuz",
        "modules_cpio": modules_cpio, "modules": ("/lib/modules/6.1.0-test/virtio.ko",),
    }  # fmt: skip
    return KernelEntry(**values)


def test_mac_is_stable_per_vm_and_locally_administered():
    assert mac_for("vm-1") == mac_for("vm-1")
    assert mac_for("vm-1") != mac_for("vm-2")
    assert mac_for("vm-1").startswith("52:54:00:")


def test_contract_carries_workload_network_and_modules(tmp_path: Path):
    contract = guest_contract(
        name="web-1",
        vm_id="0001",
        manifest=parse_manifest(MANIFEST),
        kernel=kernel(tmp_path, None),
        network=guest_network("user", mac_for("0001")),
        boot_epoch_ns=42,
    )
    document = json.loads(contract.to_json())
    assert document["contract"] == 1
    assert document["hostname"] == "web-1"
    assert document["workload"]["entrypoint"] == ["/bin/httpd"]
    assert document["workload"]["restart"]["policy"] == "always"
    assert document["network"]["address"] == "10.0.2.15"
    assert document["network"]["gateway"] == "10.0.2.2"
    assert document["modules"] == ["/lib/modules/6.1.0-test/virtio.ko"]
    assert document["boot"]["strategy"] == "initramfs"
    assert document["boot_epoch_ns"] == 42


ROOTFS_MANIFEST = {
    "name": "disk",
    "version": "1.0.0",
    "rootfs": {"url": "/images/disk.img", "format": "raw", "fstype": "ext4"},
    "workload": {"entrypoint": ["nginx"], "user": "101:101", "stop_signal": "SIGQUIT"},
}
MODULES = "/lib/modules/6.1.0-test/kernel"
NEEDS = {
    f"{MODULES}/virtio_ring.ko": (),
    f"{MODULES}/virtio.ko": (f"{MODULES}/virtio_ring.ko",),
    f"{MODULES}/virtio_mmio.ko": (f"{MODULES}/virtio.ko", f"{MODULES}/virtio_ring.ko"),
    f"{MODULES}/virtio_net.ko": (f"{MODULES}/virtio.ko", f"{MODULES}/virtio_ring.ko"),
    f"{MODULES}/virtio_blk.ko": (f"{MODULES}/virtio.ko", f"{MODULES}/virtio_ring.ko"),
    f"{MODULES}/overlay.ko": (),
    f"{MODULES}/squashfs.ko": (),
}


def rootfs_contract(tmp_path: Path, **rootfs: str) -> dict:
    manifest = json.loads(json.dumps(ROOTFS_MANIFEST))
    manifest["rootfs"].update(rootfs)
    entry = dataclasses.replace(kernel(tmp_path, None), modules=tuple(NEEDS), module_needs=NEEDS)
    contract = guest_contract(
        name="disk-1", vm_id="0002", manifest=parse_manifest(manifest), kernel=entry,
        network=guest_network("user", mac_for("0002")),
        drivers=QemuDriver(binary="/bin/true").guest_drivers(network=True, disks=1),
    )  # fmt: skip
    return json.loads(contract.to_json())


def names(paths: list[str]) -> list[str]:
    return [path.rsplit("/", 1)[1].removesuffix(".ko") for path in paths]


def test_a_rootfs_plugin_boots_from_its_disk_as_vda_with_the_block_driver(tmp_path: Path):
    document = rootfs_contract(tmp_path)
    assert document["boot"] == {
        "strategy": "rootfs", "root_device": "/dev/vda", "root_fstype": "ext4",
    }  # fmt: skip
    assert names(document["modules"]) == [
        "virtio_ring",
        "virtio",
        "virtio_mmio",
        "virtio_net",
        "virtio_blk",
    ]  # fmt: skip  (ext4 is built into the reference kernel)
    assert document["workload"]["user"] == "101:101"
    assert document["workload"]["stop_signal"] == "SIGQUIT"


def test_a_squashfs_root_also_loads_squashfs_and_overlayfs(tmp_path: Path):
    document = rootfs_contract(tmp_path, fstype="squashfs")
    assert document["boot"]["root_fstype"] == "squashfs"
    assert {"virtio_blk", "squashfs", "overlay"} <= set(names(document["modules"]))


def test_cloud_init_seeds_need_their_filesystem_and_the_vfat_character_sets(tmp_path: Path):
    assert filesystem_drivers("iso9660") == ("isofs",)
    assert filesystem_drivers("vfat") == ("vfat", "nls_cp437", "nls_ascii")
    assert filesystem_drivers("ext4") == ("ext4",)
    seed_modules = {
        f"{MODULES}/fat.ko": (), f"{MODULES}/vfat.ko": (f"{MODULES}/fat.ko",),
        f"{MODULES}/nls_cp437.ko": (), f"{MODULES}/nls_ascii.ko": (),
        f"{MODULES}/cdrom.ko": (), f"{MODULES}/isofs.ko": (f"{MODULES}/cdrom.ko",),
    }  # fmt: skip
    needs = {**NEEDS, **seed_modules}
    entry = dataclasses.replace(kernel(tmp_path, None), modules=tuple(needs), module_needs=needs)
    assert names(list(entry.modules_for(filesystem_drivers("vfat")))) == [
        "fat", "vfat", "nls_cp437", "nls_ascii",
    ]  # fmt: skip
    assert names(list(entry.modules_for(filesystem_drivers("iso9660")))) == ["cdrom", "isofs"]


def test_initramfs_plugins_stay_in_their_initramfs(tmp_path: Path):
    document = json.loads(
        guest_contract(
            name="web-1", vm_id="1", manifest=parse_manifest(MANIFEST),
            kernel=kernel(tmp_path, None), network=guest_network("user", mac_for("1")),
        ).to_json()
    )  # fmt: skip
    assert document["boot"] == {"strategy": "initramfs", "root_device": None, "root_fstype": None}


def test_the_agent_keeps_8080_unless_the_workload_serves_there(tmp_path: Path):
    initramfs = parse_manifest(MANIFEST)  # base_url port 80
    assert agent_guest_port(initramfs) == 8080
    assert agent_guest_port(initramfs, exposed=[8080]) == 18080
    on_8080 = parse_manifest(
        {**MANIFEST, "workload": {**MANIFEST["workload"], "base_url": "http://127.0.0.1:8080"}}
    )
    assert agent_guest_port(on_8080) == 18080
    assert agent_guest_port(on_8080, exposed=[18080]) == 28080
    document = json.loads(
        guest_contract(
            name="web-1", vm_id="1", manifest=on_8080, kernel=kernel(tmp_path, None),
            network=guest_network("user", mac_for("1")),
        ).to_json()
    )  # fmt: skip
    assert document["agent"]["tcp_port"] == 18080


def test_bridged_mode_is_refused_until_its_driver_exists():
    with pytest.raises(VolantError, match="bridged networking driver"):
        guest_network("bridged", "52:54:00:00:00:01")


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_initrd_is_plugin_then_modules_then_vm_json_all_uncompressed(
    tmp_path: Path, compression: str | None
):
    plugin_entries = [CpioEntry.file("/init", b"#!/bin/sh\n", 0o755)]
    plugin = tmp_path / "plugin.cpio"
    write_cpio(plugin, plugin_entries, compression)
    modules = tmp_path / "modules.cpio"
    write_cpio(modules, [CpioEntry.file("/lib/modules/6.1.0-test/virtio.ko", b"\x7fELF")])
    entry = kernel(tmp_path, modules)
    contract = guest_contract(
        name="web-1", vm_id="0001", manifest=parse_manifest(MANIFEST), kernel=entry,
        network=guest_network("user", mac_for("0001")),
    )  # fmt: skip
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = prepare_initrd(run_dir, plugin, entry, contract).read_bytes()
    # The guest kernel gets plain cpio parts one after another, each 4-byte aligned:
    # compressed plugin images are decompressed on the host.
    for part in (cpio_bytes(plugin_entries), modules.read_bytes()):
        assert data[: len(part)] == part
        data = data[(len(part) + 3) // 4 * 4 :]
    (run_dir / "last.cpio").write_bytes(data)
    vm_json = cpio_files(run_dir / "last.cpio")["/etc/volant/vm.json"]
    assert json.loads(vm_json)["vm"]["name"] == "web-1"


def test_a_rootfs_plugins_disks_follow_the_root_disk_in_list_order(tmp_path: Path):
    manifest = json.loads(json.dumps(ROOTFS_MANIFEST))
    manifest["disks"] = [
        {"name": "data", "source": "/d.img", "fstype": "ext4", "mount": "/data"},
        {"name": "ro", "source": "/r.img", "fstype": "squashfs", "mount": "/ro"},
        {"name": "raw", "source": "/x.img"},
    ]
    contract = guest_contract(
        name="disk-1", vm_id="0002", manifest=parse_manifest(manifest),
        kernel=kernel(tmp_path, None), network=guest_network("user", mac_for("0002")),
    )  # fmt: skip
    assert [disk.model_dump() for disk in contract.disks] == [
        {"name": "data", "device": "/dev/vdb", "fstype": "ext4", "mount": "/data",
         "readonly": False},
        {"name": "ro", "device": "/dev/vdc", "fstype": "squashfs", "mount": "/ro",
         "readonly": True},
        {"name": "raw", "device": "/dev/vdd", "fstype": None, "mount": None, "readonly": False},
    ]  # fmt: skip
    initramfs = guest_contract(
        name="web-1", vm_id="1", manifest=parse_manifest({**MANIFEST, "disks": manifest["disks"]}),
        kernel=kernel(tmp_path, None), network=guest_network("user", mac_for("1")),
    )  # fmt: skip
    assert [disk.device for disk in initramfs.disks] == ["/dev/vda", "/dev/vdb", "/dev/vdc"]


@pytest.mark.parametrize(
    ("index", "device"), [(0, "/dev/vda"), (25, "/dev/vdz"), (26, "/dev/vdaa"), (27, "/dev/vdab")]
)
def test_virtio_disk_names_follow_the_kernels_scheme(index: int, device: str):
    assert virtio_disk_device(index) == device
