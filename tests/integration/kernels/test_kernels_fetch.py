"""The real reference kernel: `volantd kernels fetch`, `list` and `import`, run as processes.

The Debian package is downloaded once into pytest's cache folder (shared across runs through
VOLANT_CACHE_DIR); every test gets its own VOLANT_HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.archives import cpio_files
from volantd.hypervisors import QemuDriver
from volantd.kernels import KernelStore
from volantd.kernels.modinfo import parse_modinfo
from volantd.kernels.store import METADATA_FILE

pytestmark = pytest.mark.integration

VOLANTD = Path(sys.executable).parent / "volantd"
GUEST_DRIVERS = (
    "virtio_mmio.ko",
    "virtio_pci.ko",
    "virtio_net.ko",
    "virtio_blk.ko",
    "virtio_console.ko",
    "vsock.ko",
    "vmw_vsock_virtio_transport.ko",
    "overlay.ko",
    "squashfs.ko",
    "isofs.ko",  # cloud-init seeds
    "vfat.ko",
    "fat.ko",
    "nls_cp437.ko",
    "nls_ascii.ko",
)


@dataclass(frozen=True)
class Volantd:
    home: Path
    cache: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "VOLANT_HOME": str(self.home), "VOLANT_CACHE_DIR": str(self.cache)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(VOLANTD), "kernels", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def kernels(self) -> list[dict[str, Any]]:
        kernels: list[dict[str, Any]] = json.loads(self.run("list", "--json").stdout)
        return kernels


@pytest.fixture(scope="session")
def deb_cache(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the reference kernel comes from apt")
    probe = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", "linux-image-cloud-amd64"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0 or not probe.stdout:
        pytest.skip("apt knows no linux-image-cloud-amd64: run apt-get update")
    cache = getattr(pytestconfig, "cache", None)
    if cache is None:  # cacheprovider disabled: download once per session
        return tmp_path_factory.mktemp("volant-cache")
    return Path(cache.mkdir("volant-kernel-debs"))


@pytest.fixture(scope="module")
def fetched(deb_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Volantd:
    volantd = Volantd(tmp_path_factory.mktemp("volant-home"), deb_cache)
    result = volantd.run("fetch")
    assert "Installed kernel debian-" in result.stderr
    return volantd


@pytest.fixture
def fetched_copy(fetched: Volantd, tmp_path: Path) -> Volantd:
    home = tmp_path / "volant-home"
    shutil.copytree(fetched.home, home)
    return Volantd(home, fetched.cache)


def mtimes(root: Path) -> dict[Path, int]:
    def walk(path: Path) -> Iterator[Path]:
        yield path
        if path.is_dir():
            for child in path.iterdir():
                yield from walk(child)

    return {path: path.stat().st_mtime_ns for path in walk(root)}


def test_fetch_installs_the_default_reference_kernel(fetched: Volantd) -> None:
    (kernel,) = fetched.kernels()
    assert kernel["name"] == f"debian-{kernel['version']}"
    assert kernel["version"].endswith("-cloud-amd64")
    assert kernel["format"] == "bzImage"
    assert kernel["default"] is True
    assert kernel["source"]["package"] == f"linux-image-{kernel['version']}"
    assert Path(kernel["image"]).read_bytes()[0x202:0x206] == b"HdrS"
    table = fetched.run("list").stdout
    assert kernel["name"] in table and "bzImage" in table and "MiB" in table


def test_the_modules_cpio_holds_the_guest_drivers_in_dependency_order(fetched: Volantd) -> None:
    (kernel,) = fetched.kernels()
    modules: list[str] = kernel["modules"]
    names = [Path(module).name for module in modules]
    for driver in GUEST_DRIVERS:
        assert driver in names, f"{driver} is missing from {names}"

    files = cpio_files(Path(kernel["modules_cpio"]))
    assert sorted(files) == sorted(modules)
    assert all(path.startswith(f"/lib/modules/{kernel['version']}/kernel/") for path in files)

    loaded: set[str] = set(kernel["builtin_modules"])
    for path in modules:
        body = files[path]
        assert body.startswith(b"\x7fELF"), f"{path} is not an uncompressed ELF object"
        info = parse_modinfo(body, path)
        assert info.kernel_release == kernel["version"]
        for dependency in info.depends:
            assert dependency in loaded, f"{path} is loaded before its dependency {dependency}"
        for soft in info.softdep_pre:
            if soft.replace("-", "_") in {Path(m).name.removesuffix(".ko") for m in modules}:
                assert soft.replace("-", "_") in loaded
        assert info.name is not None
        loaded.add(info.name)


def test_a_microvm_with_a_nic_loads_six_of_the_modules(fetched: Volantd) -> None:
    entry = KernelStore(fetched.home / "kernels").get()
    modules = entry.modules_for(QemuDriver().guest_drivers(network=True))
    # The order follows the modules' own dependencies (checked above), which Debian's kernel
    # updates may change (6.1.0-56 made virtio_ring load before virtio).
    assert sorted(Path(path).name for path in modules) == [
        "failover.ko", "net_failover.ko", "virtio.ko", "virtio_mmio.ko", "virtio_net.ko",
        "virtio_ring.ko",
    ]  # fmt: skip
    with_disk = entry.modules_for(QemuDriver().guest_drivers(network=True, disks=1))
    assert set(with_disk) - set(modules) == {
        path for path in entry.modules if path.endswith("/virtio_blk.ko")
    }


def test_a_second_fetch_is_a_no_op(fetched: Volantd) -> None:
    before = mtimes(fetched.home) | mtimes(fetched.cache)
    result = fetched.run("fetch")
    assert "is up to date" in result.stderr
    assert "Downloading" not in result.stderr and "Extracting" not in result.stderr
    assert mtimes(fetched.home) | mtimes(fetched.cache) == before


def test_an_entry_made_for_another_module_set_is_extracted_again(fetched: Volantd) -> None:
    (reference,) = fetched.kernels()
    metadata_file = fetched.home / "kernels" / reference["name"] / METADATA_FILE
    metadata = json.loads(metadata_file.read_text())
    metadata["wanted_modules"] = metadata["wanted_modules"][:-1]  # as before a driver was added
    metadata_file.write_text(json.dumps(metadata))
    result = fetched.run("fetch")
    assert "installed with another set of guest modules" in result.stderr
    assert "Extracting" in result.stderr and "Downloading" not in result.stderr  # cached .deb
    assert "is up to date" in fetched.run("fetch").stderr


def test_the_fetched_image_can_be_imported(fetched: Volantd) -> None:
    (reference,) = fetched.kernels()
    result = fetched.run("import", reference["image"], "--name", "imported-vmlinuz")
    assert "imported-vmlinuz: kernel " + reference["version"] in result.stdout
    kernels = {kernel["name"]: kernel for kernel in fetched.kernels()}
    imported = kernels["imported-vmlinuz"]
    assert imported["version"] == reference["version"]
    assert imported["format"] == "bzImage"
    assert imported["modules"] == []
    assert kernels[reference["name"]]["default"] and not imported["default"]


def test_importing_with_the_package_module_tree_selects_the_same_modules(
    fetched: Volantd, tmp_path: Path
) -> None:
    (reference,) = [k for k in fetched.kernels() if k["source"]["kind"] == "debian"]
    (deb,) = (fetched.cache / "sha256").iterdir()
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "root")], check=True)
    modules_dir = tmp_path / "root" / "lib" / "modules"
    result = fetched.run(
        "import", reference["image"], "--modules", str(modules_dir), "--name", "from-tree"
    )
    assert "from-tree" in result.stdout
    kernels = {kernel["name"]: kernel for kernel in fetched.kernels()}
    assert kernels["from-tree"]["modules"] == reference["modules"]
    assert kernels["from-tree"]["builtin_modules"] == reference["builtin_modules"]


def test_a_corrupted_kernel_is_refused_and_fetch_repairs_it(fetched_copy: Volantd) -> None:
    (kernel,) = [k for k in fetched_copy.kernels() if k["source"]["kind"] == "debian"]
    image = Path(kernel["image"])
    data = bytearray(image.read_bytes())
    data[4096] ^= 0xFF
    image.write_bytes(bytes(data))
    refused = fetched_copy.run("default", check=False)
    assert refused.returncode == 1
    assert "corrupted" in refused.stderr and "volantd kernels fetch --force" in refused.stderr
    repaired = fetched_copy.run("fetch")
    assert "reinstalling" in repaired.stderr and "Downloading" not in repaired.stderr
    assert fetched_copy.run("default").stdout.startswith(kernel["name"])
