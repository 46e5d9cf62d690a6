"""KernelStore: atomic installs, content checks on every load, the default kernel."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from support.archives import cpio_files
from volantd.kernels import (
    ImageFormat,
    KernelError,
    KernelImageError,
    KernelIntegrityError,
    KernelNotFoundError,
    KernelStore,
)

MakeTree = Callable[..., Path]
MakeImage = Callable[..., Path]
RELEASE = "6.9.0-volant-test"


@pytest.fixture
def store(tmp_path: Path) -> KernelStore:
    return KernelStore(tmp_path / "home" / "kernels")


def test_import_installs_image_modules_cpio_and_metadata(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    entry = store.import_kernel(make_bzimage(), make_module_tree())
    assert entry.name == RELEASE
    assert entry.version == RELEASE
    assert entry.image_format is ImageFormat.BZIMAGE
    assert entry.image == store.root / RELEASE / "vmlinuz"
    assert entry.modules_cpio == store.root / RELEASE / "modules.cpio"
    assert entry.is_default  # the only kernel
    assert entry.builtin_modules == ("ext4", "squashfs", "virtio_console", "virtio_pci")
    assert entry.size == entry.image.stat().st_size + entry.modules_cpio.stat().st_size
    prefix = f"/lib/modules/{RELEASE}/kernel/"
    assert entry.modules[0] == prefix + "arch/x86/crypto/crc32c-intel.ko"
    assert prefix + "drivers/block/virtio_blk.ko" in entry.modules  # was .ko.xz
    files = cpio_files(entry.modules_cpio)
    assert sorted(files) == sorted(entry.modules)
    assert all(body.startswith(b"\x7fELF") for body in files.values())
    assert sorted(path.name for path in store.root.iterdir()) == [".lock", RELEASE]


def test_metadata_records_digests_source_and_load_order(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    image, modules = make_bzimage(), make_module_tree()
    entry = store.import_kernel(image, modules, "custom")
    metadata = json.loads((entry.directory / "kernel.json").read_text())
    assert metadata["name"] == "custom"
    assert metadata["version"] == RELEASE
    assert metadata["source"] == {
        "kind": "import",
        "path": str(image.resolve()),
        "modules_path": str(modules.resolve()),
    }
    assert [file["name"] for file in metadata["files"]] == ["vmlinuz", "modules.cpio"]
    assert metadata["files"][0]["size"] == image.stat().st_size
    assert metadata["modules"] == list(entry.modules)


def test_a_vm_gets_only_the_modules_its_drivers_need(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    entry = store.import_kernel(make_bzimage(), make_module_tree())
    prefix = f"/lib/modules/{RELEASE}/kernel/"

    def names(paths: tuple[str, ...]) -> list[str]:
        return [path.removeprefix(prefix) for path in paths]

    network_vm = entry.modules_for(["virtio_mmio", "virtio_net"])
    assert sorted(names(network_vm)) == sorted([
        "drivers/virtio/virtio.ko", "drivers/virtio/virtio_ring.ko",
        "drivers/virtio/virtio_mmio.ko", "net/core/failover.ko",
        "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko",
    ])  # fmt: skip
    assert [p for p in entry.modules if p in network_vm] == list(network_vm)  # load order kept
    assert sorted(names(entry.modules_for(["virtio-rng"]))) == [  # either spelling
        "drivers/char/hw_random/virtio-rng.ko", "drivers/virtio/virtio.ko",
        "drivers/virtio/virtio_ring.ko",
    ]  # fmt: skip
    # soft dependencies come along; built-in drivers need nothing
    assert names(entry.modules_for(["overlay"])) == [
        "arch/x86/crypto/crc32c-intel.ko", "fs/overlayfs/overlay.ko",
    ]  # fmt: skip
    assert entry.modules_for(["virtio_console", "ext4"]) == ()
    # what a VM would need but this entry has neither as a module nor built in
    assert entry.lacking(["virtio-rng", "ext4", "isofs"]) == ["isofs"]
    # the record survives a reload from disk
    assert store.get(entry.name).modules_for(["virtio_net"]) == entry.modules_for(["virtio_net"])


def test_entries_recorded_before_dependencies_give_every_module(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    entry = store.import_kernel(make_bzimage(), make_module_tree())
    metadata_file = entry.directory / "kernel.json"
    metadata = json.loads(metadata_file.read_text())
    del metadata["module_needs"]
    metadata_file.write_text(json.dumps(metadata))
    assert store.get(entry.name).modules_for(["virtio_net"]) == entry.modules


def test_modules_cpio_is_reproducible(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    image, modules = make_bzimage(), make_module_tree()
    first = store.import_kernel(image, modules, "one")
    second = store.import_kernel(image, modules, "two")
    assert first.modules_cpio is not None and second.modules_cpio is not None
    assert first.modules_cpio.read_bytes() == second.modules_cpio.read_bytes()


def test_a_kernel_without_modules_has_no_cpio(store: KernelStore, make_bzimage: MakeImage) -> None:
    entry = store.import_kernel(make_bzimage())
    assert entry.modules_cpio is None
    assert entry.modules == ()
    assert entry.size == entry.image.stat().st_size


def test_get_detects_a_corrupted_file_of_the_same_size(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    entry = store.import_kernel(make_bzimage(), make_module_tree())
    assert entry.modules_cpio is not None
    data = bytearray(entry.modules_cpio.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.modules_cpio.write_bytes(bytes(data))
    with pytest.raises(KernelIntegrityError) as caught:
        store.get(entry.name)
    message = str(caught.value)
    assert str(entry.modules_cpio) in message and "corrupted" in message
    assert f"volantd kernels import {make_bzimage()}" in message


def test_get_detects_truncated_and_missing_files(
    store: KernelStore, make_bzimage: MakeImage
) -> None:
    entry = store.import_kernel(make_bzimage())
    entry.image.write_bytes(entry.image.read_bytes()[:-1])
    with pytest.raises(KernelIntegrityError, match=r"expected 8192 bytes .* found 8191 bytes"):
        store.get()
    entry.image.unlink()
    with pytest.raises(KernelIntegrityError, match=r"cannot be read"):
        store.get()


def test_a_corrupted_fetched_kernel_suggests_fetch_force(
    store: KernelStore, make_bzimage: MakeImage
) -> None:
    entry = store.import_kernel(make_bzimage())
    metadata_file = entry.directory / "kernel.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["source"] = {"kind": "debian", "package": "linux-image-x", "package_version": "1"}
    metadata_file.write_text(json.dumps(metadata))
    entry.image.write_bytes(b"garbage")
    with pytest.raises(KernelIntegrityError, match=r"volantd kernels fetch --force"):
        store.get(entry.name)


def test_unreadable_metadata_is_an_integrity_error(
    store: KernelStore, make_bzimage: MakeImage
) -> None:
    entry = store.import_kernel(make_bzimage())
    (entry.directory / "kernel.json").write_text("{not json")
    with pytest.raises(KernelIntegrityError, match=r"kernel.json is unreadable"):
        store.list()


def test_an_existing_name_is_replaced_only_when_asked(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    image = make_bzimage()
    store.import_kernel(image, name="k")
    with pytest.raises(KernelError, match=r"'k' is already installed"):
        store.import_kernel(image, make_module_tree(), name="k")
    replaced = store.import_kernel(image, make_module_tree(), name="k", replace=True)
    assert replaced.modules_cpio is not None
    assert [entry.name for entry in store.list()] == ["k"]
    assert not [path for path in store.root.iterdir() if path.name.startswith(".k")]


def test_a_failed_install_leaves_nothing_behind(
    store: KernelStore, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    # Modules built for another release than the image are refused while staging.
    tree = make_module_tree(release="6.9.0-other")
    with pytest.raises(KernelError, match=r"are for kernel 6.9.0-other"):
        store.import_kernel(make_bzimage(), tree)
    image = make_bzimage(release="6.9.0-other", filename="other-bzImage")
    with pytest.raises(KernelError, match=rf"built for kernel {RELEASE}, not 6.9.0-other"):
        store.import_kernel(image, tree)
    assert store.list() == []
    assert sorted(path.name for path in store.root.iterdir()) == [".lock"]


@pytest.mark.parametrize("name", ["/", ".hidden", "a/b", "-rf", "default", "x" * 200])
def test_invalid_names_are_refused(store: KernelStore, make_bzimage: MakeImage, name: str) -> None:
    with pytest.raises(KernelError, match=r"invalid kernel name"):
        store.import_kernel(make_bzimage(), name=name)


def test_importing_something_that_is_not_a_kernel_names_it(
    store: KernelStore, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.img"
    bogus.write_bytes(b"\0" * 4096)
    with pytest.raises(KernelImageError, match=rf"{bogus} is not a kernel image"):
        store.import_kernel(bogus)


def test_default_kernel_is_marked_or_the_only_one(
    store: KernelStore, make_bzimage: MakeImage
) -> None:
    with pytest.raises(KernelNotFoundError, match=r"no kernel is installed; run `volantd kernels"):
        store.get()
    image = make_bzimage()
    store.import_kernel(image, name="a")
    assert store.get().name == "a"
    store.import_kernel(image, name="b")
    with pytest.raises(KernelNotFoundError, match=r"none is marked"):
        store.get()
    store.import_kernel(image, name="c", make_default=True)
    assert store.get().name == "c"
    assert [entry.name for entry in store.list() if entry.is_default] == ["c"]
    assert store.set_default("b").is_default
    assert store.get().name == "b"
    assert (store.root / "default").read_text() == "b\n"


def test_the_newest_fetched_kernel_is_the_default_unless_one_is_marked(
    store: KernelStore, make_bzimage: MakeImage
) -> None:
    image = make_bzimage()
    for name, installed_at in (("debian-old", "2024-01-01"), ("debian-new", "2025-01-01")):
        entry = store.import_kernel(image, name=name)
        metadata_file = entry.directory / "kernel.json"
        metadata = json.loads(metadata_file.read_text())
        metadata["source"] = {"kind": "debian", "package": name, "package_version": "1"}
        metadata["installed_at"] = installed_at
        metadata_file.write_text(json.dumps(metadata))
    store.import_kernel(image, name="custom")
    assert store.get().name == "debian-new"
    store.set_default("custom")
    assert store.get().name == "custom"


def test_unknown_and_stale_default_names_are_clear_errors(
    store: KernelStore, make_bzimage: MakeImage
) -> None:
    store.import_kernel(make_bzimage(), name="a")
    with pytest.raises(KernelNotFoundError, match=r"no kernel named 'zz' .*installed: a"):
        store.get("zz")
    with pytest.raises(KernelNotFoundError):
        store.set_default("zz")
    (store.root / "default").write_text("gone\n")
    with pytest.raises(KernelNotFoundError, match=r"default kernel 'gone' .* is not installed"):
        store.get()


def test_the_host_store_honours_volant_home_and_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOLANT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VOLANT_CACHE_DIR", raising=False)
    assert KernelStore.from_environment().root == tmp_path / "home" / "kernels"
    assert KernelStore.from_environment().cache == tmp_path / "home" / "cache"
    monkeypatch.setenv("VOLANT_CACHE_DIR", str(tmp_path / "shared-cache"))
    assert KernelStore.from_environment().cache == tmp_path / "shared-cache"
