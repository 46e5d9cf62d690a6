"""Module trees on disk: found from the path given, indexed from modinfo or modules.dep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from volantd.kernels import KernelError, select_modules
from volantd.kernels.moduletree import (
    DirectoryModuleTree,
    parse_modules_alias,
    parse_modules_dep,
    parse_modules_softdep,
)

MakeTree = Callable[..., Path]
RELEASE = "6.9.0-volant-test"


def test_a_tree_without_modules_dep_is_indexed_from_each_modinfo(
    make_module_tree: MakeTree,
) -> None:
    tree = DirectoryModuleTree(make_module_tree())
    index = tree.index()
    assert index.modules["virtio_net"].depends == ("virtio", "virtio_ring", "net_failover")
    assert index.modules["virtio_rng"].path == "kernel/drivers/char/hw_random/virtio-rng.ko.zst"
    assert index.modules["overlay"].softdep_pre == ("crc32c",)
    assert index.aliases["crc32c"] == ("crc32c_intel",)
    assert "ext4" in index.builtin


def test_the_guest_selection_from_a_tree(make_module_tree: MakeTree) -> None:
    selection = select_modules(DirectoryModuleTree(make_module_tree()).index())
    order = [module.name for module in selection.modules]
    assert set(order) == {
        "crc32c_intel",
        "failover",
        "net_failover",
        "overlay",
        "virtio",
        "virtio_blk",
        "virtio_mmio",
        "virtio_net",
        "virtio_ring",
        "virtio_rng",
        "vmw_vsock_virtio_transport",
        "vsock",
    }
    assert order.index("crc32c_intel") < order.index("overlay")
    assert order.index("net_failover") < order.index("virtio_net")
    assert selection.builtin == ("ext4", "squashfs", "virtio_console", "virtio_pci")


def test_read_returns_decompressed_elf_objects(make_module_tree: MakeTree) -> None:
    tree = DirectoryModuleTree(make_module_tree())
    paths = ["kernel/drivers/block/virtio_blk.ko.xz", "kernel/drivers/virtio/virtio.ko"]
    bodies = tree.read(paths)
    assert all(body.startswith(b"\x7fELF") for body in bodies.values())


def test_modules_dep_is_used_when_depmod_has_run(make_module_tree: MakeTree) -> None:
    directory = make_module_tree()
    # depmod's view deliberately differs from the modinfo: it must win.
    (directory / "modules.dep").write_text(
        "kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko:\n"
        "kernel/fs/overlayfs/overlay.ko:\n"
        f"/lib/modules/{RELEASE}/kernel/net/vmw_vsock/vsock.ko:\n"
    )
    (directory / "modules.softdep").write_text("# comment\nsoftdep overlay pre: virtio\n")
    index = DirectoryModuleTree(directory).index()
    assert sorted(index.modules) == ["overlay", "virtio", "virtio_mmio", "vsock"]
    assert index.modules["virtio_mmio"].depends == ("virtio",)
    assert index.modules["overlay"].softdep_pre == ("virtio",)
    assert index.modules["vsock"].path == "kernel/net/vmw_vsock/vsock.ko"


def test_locate_accepts_the_release_directory_or_its_parent(make_module_tree: MakeTree) -> None:
    directory = make_module_tree()
    assert DirectoryModuleTree.locate(directory).directory == directory
    assert DirectoryModuleTree.locate(directory.parent).directory == directory
    assert DirectoryModuleTree.locate(directory.parent, RELEASE).kernel_version == RELEASE


def test_locate_picks_the_release_of_the_image_among_several(
    make_module_tree: MakeTree, tmp_path: Path
) -> None:
    directory = make_module_tree()
    make_module_tree(release="5.10.0-other", root=tmp_path / "rootfs")
    parent = directory.parent
    assert DirectoryModuleTree.locate(parent, RELEASE).directory == directory
    with pytest.raises(KernelError, match=r"several kernels .*5.10.0-other"):
        DirectoryModuleTree.locate(parent, "6.0.0-unknown")


def test_locate_rejects_missing_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match=rf"{tmp_path / 'nope'} does not exist"):
        DirectoryModuleTree.locate(tmp_path / "nope")
    with pytest.raises(KernelError, match=r"holds no kernel modules"):
        DirectoryModuleTree.locate(tmp_path)


def test_depmod_file_parsers() -> None:
    assert parse_modules_dep("a.ko: b.ko c.ko\nb.ko:\n\n") == {"a.ko": ["b.ko", "c.ko"], "b.ko": []}
    assert parse_modules_softdep("softdep ext4 pre: crc32c post: x\nsoftdep ext4 pre: y") == {
        "ext4": ("crc32c", "y")
    }
    assert parse_modules_alias("# x\nalias crc32c crc32c-intel\nalias fs-ext4 ext4\n") == [
        ("crc32c", "crc32c_intel"),
        ("fs-ext4", "ext4"),
    ]
