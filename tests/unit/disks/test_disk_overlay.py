"""A rootfs plugin's root disk: the shared cached image behind a per-VM qcow2 overlay.

Real `qemu-img` and `qemu-io` (qemu-utils): the overlay is written the way QEMU writes it for
a guest, and the cached image must come out unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from volantd.disks import OVERLAY_NAME, DiskError, create_overlay, qcow2_backing, root_disk

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-img") and shutil.which("qemu-io")), reason="needs qemu-utils"
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 1 MiB raw 'cached image' with recognisable content."""
    path = tmp_path / "cache" / "sha256" / "image"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(range(256)) * 4096)
    path.chmod(0o444)
    return path


def qemu_io(image: Path, command: str, fmt: str = "qcow2") -> str:
    result = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, str(image)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def test_the_first_start_creates_an_overlay_backed_by_the_cached_image(
    tmp_path: Path, image: Path
) -> None:
    run_dir = tmp_path / "run" / "web-1"
    disk = root_disk(run_dir, image, "raw", "ext4")
    assert disk.path == run_dir / OVERLAY_NAME and disk.format == "qcow2"
    assert not disk.readonly and disk.name == "root"
    assert qcow2_backing(disk.path) == str(image.resolve())
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(disk.path)],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert info["backing-filename-format"] == "raw"
    assert info["virtual-size"] == image.stat().st_size
    assert [p.name for p in run_dir.iterdir()] == [OVERLAY_NAME]  # no partial file left


def test_writes_land_in_the_overlay_and_later_starts_keep_it(tmp_path: Path, image: Path) -> None:
    before = digest(image)
    run_dir = tmp_path / "vm"
    overlay = root_disk(run_dir, image, "raw", "ext4").path
    qemu_io(overlay, "write -P 0x5a 4096 8192")
    assert digest(image) == before
    again = root_disk(run_dir, image, "raw", "ext4")
    assert again.path == overlay
    assert "read 8192/8192" in qemu_io(again.path, "read -P 0x5a 4096 8192")
    shown = qemu_io(again.path, "read -P 0x01 1 1")  # the image shows through elsewhere
    assert "read 1/1" in shown and "verification failed" not in shown
    assert digest(image) == before


def test_each_vm_gets_its_own_overlay(tmp_path: Path, image: Path) -> None:
    first = root_disk(tmp_path / "a", image, "raw", "ext4").path
    second = root_disk(tmp_path / "b", image, "raw", "ext4").path
    qemu_io(first, "write -P 0x11 0 4096")
    assert "verification failed" not in qemu_io(second, "read -P 0x01 1 1")
    assert "verification failed" in qemu_io(first, "read -P 0x01 1 1")


def test_a_qcow2_image_is_a_qcow2_backing_file(tmp_path: Path) -> None:
    image = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    disk = root_disk(tmp_path / "vm", image, "qcow2", "xfs")
    assert qcow2_backing(disk.path) == str(image.resolve())
    assert qcow2_backing(image) is None


def test_a_squashfs_root_is_the_cached_image_read_only_without_an_overlay(
    tmp_path: Path, image: Path
) -> None:
    run_dir = tmp_path / "vm"
    disk = root_disk(run_dir, image, "raw", "squashfs")
    assert disk.path == image and disk.readonly and disk.format == "raw"
    assert not run_dir.exists()


def test_an_overlay_whose_image_left_the_cache_is_refused(tmp_path: Path, image: Path) -> None:
    run_dir = tmp_path / "vm"
    root_disk(run_dir, image, "raw", "ext4")
    image.unlink()
    with pytest.raises(DiskError, match="no longer in the artifact cache"):
        root_disk(run_dir, image, "raw", "ext4")


def test_qemu_img_failures_are_reported_with_its_message(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match=r"creating the overlay .* failed: .*"):
        create_overlay(tmp_path / OVERLAY_NAME, tmp_path / "missing.img", "raw")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_qcow2_has_no_backing_to_read(tmp_path: Path, image: Path) -> None:
    with pytest.raises(DiskError, match="is not a qcow2 image"):
        qcow2_backing(image)
