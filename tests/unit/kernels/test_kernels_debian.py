"""The Debian reference kernel: apt metadata, the package cache, reading a kernel .deb."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from volantd.errors import MissingHostToolError
from volantd.kernels import PackageFetchError, select_modules
from volantd.kernels.debian import (
    DebianPackage,
    apt_show,
    cached_package_path,
    download_package,
    kernel_dependency,
    parse_control_stanza,
    read_kernel_package,
    resolve_reference_package,
)

MakeTree = Callable[..., Path]
RELEASE = "6.9.0-volant-test"


def test_control_stanzas_are_parsed_up_to_the_first_blank_line() -> None:
    text = (
        "Package: linux-image-cloud-amd64\n"
        "Version: 6.1.176-1\n"
        "Description: Linux for\n cloud platforms\n"
        "\n"
        "Package: second\n"
    )
    fields = parse_control_stanza(text)
    assert fields["Version"] == "6.1.176-1"
    assert fields["Description"] == "Linux for\ncloud platforms"
    assert "second" not in fields.values()


@pytest.mark.parametrize(
    "depends",
    [
        "linux-image-6.1.0-50-cloud-amd64",
        "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)",
        "linux-base, linux-image-6.1.0-50-cloud-amd64:amd64 (>= 6.1) | linux-image-cloud-amd64",
    ],
)
def test_the_concrete_kernel_is_found_in_the_metapackage_depends(depends: str) -> None:
    assert kernel_dependency(depends, "linux-image-cloud-amd64") == (
        "linux-image-6.1.0-50-cloud-amd64"
    )


def test_a_metapackage_without_kernel_dependency_suggests_apt_update() -> None:
    with pytest.raises(PackageFetchError, match=r"apt-get update"):
        kernel_dependency("linux-base", "linux-image-cloud-amd64")


def test_the_kernel_release_comes_from_the_package_name() -> None:
    package = DebianPackage("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", "0" * 64, 1)
    assert package.kernel_version == "6.1.0-50-cloud-amd64"


def test_missing_apt_is_a_missing_host_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingHostToolError, match=r"apt-cache is required .* apt-get install apt"):
        resolve_reference_package()


def test_an_unknown_package_suggests_apt_update() -> None:
    if shutil.which("apt-cache") is None:
        pytest.skip("apt-cache is not installed")
    with pytest.raises(PackageFetchError, match=r"volant-no-such-package.*apt-get update"):
        apt_show("volant-no-such-package")


def test_a_cached_package_is_reused_without_apt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = b"a cached kernel package"
    package = DebianPackage("linux-image-x", "1", hashlib.sha256(content).hexdigest(), len(content))
    cached = cached_package_path(package, tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(content)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # apt-get would be unreachable
    messages: list[str] = []
    assert download_package(package, tmp_path, messages.append) == cached
    assert "Using cached" in messages[0]


def test_a_corrupted_cache_entry_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = b"a cached kernel package"
    package = DebianPackage("linux-image-x", "1", hashlib.sha256(b"other").hexdigest(), 23)
    cached = cached_package_path(package, tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(content)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    messages: list[str] = []
    with pytest.raises(MissingHostToolError, match=r"apt-get"):
        download_package(package, tmp_path, messages.append)
    assert "corrupted" in messages[0]


@pytest.fixture
def kernel_deb(make_module_tree: MakeTree, tmp_path: Path) -> Path:
    """A real .deb laid out like Debian's kernel packages, built with dpkg-deb."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path / "package"
    tree = make_module_tree(root=root)
    (tree / "modules.builtin.modinfo").write_bytes(b"crc32c_generic.alias=crc32c\0")
    (tree / "modules.order").write_text("kernel/drivers/virtio/virtio.ko\n")
    (root / "boot").mkdir()
    (root / "boot" / f"vmlinuz-{RELEASE}").write_bytes(b"MZ" + b"\0" * 4096)
    (root / "boot" / f"config-{RELEASE}").write_text("CONFIG_EXT4_FS=y\n")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-image-{RELEASE}\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: volant <volant@example.invalid>\nDescription: test kernel\n"
    )
    deb = tmp_path / "kernel.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def test_a_kernel_package_is_read_without_unpacking_it(kernel_deb: Path) -> None:
    kernel = read_kernel_package(kernel_deb)
    assert kernel.image.startswith(b"MZ")
    assert kernel.tree.kernel_version == RELEASE
    index = kernel.tree.index()
    assert index.modules["virtio_mmio"].depends == ("virtio", "virtio_ring")
    assert "ext4" in index.builtin
    assert index.aliases["crc32c"] == ("crc32c_generic", "crc32c_intel")


def test_the_chosen_modules_are_read_back_decompressed(kernel_deb: Path) -> None:
    tree = read_kernel_package(kernel_deb).tree
    selection = select_modules(tree.index())
    names = [module.name for module in selection.modules]
    # overlay's softdep on the crc32c alias is met by the built-in crc32c_generic.
    assert "crc32c_intel" not in names
    bodies = tree.read([module.path for module in selection.modules])
    assert sorted(bodies) == sorted(module.path for module in selection.modules)
    assert all(body.startswith(b"\x7fELF") for body in bodies.values())


def test_a_file_that_is_not_a_package_is_reported(tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"!<arch>\nnot really\n")
    with pytest.raises(PackageFetchError, match=r"bogus.deb"):
        read_kernel_package(bogus)
