"""A plugin's extra disks for one VM: overlays over cached images, new empty ext4 disks."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from pluginspec import Disk
from volantd.disks import DiskError, data_disks, qcow2_backing

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-img") and shutil.which("mkfs.ext4")),
    reason="needs qemu-utils and e2fsprogs",
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "cache" / "image"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 4096)
    path.chmod(0o444)
    return path


def disks(*specs: dict) -> list[Disk]:
    return [Disk.model_validate(spec) for spec in specs]


def test_writable_images_get_an_overlay_each_read_only_ones_are_attached_as_cached(
    tmp_path: Path, image: Path
) -> None:
    run_dir = tmp_path / "run"
    wanted = disks(
        {"name": "data", "source": "/d.img"},
        {"name": "ro", "source": "/r.img", "readonly": True},
        {"name": "sq", "source": "/s.img", "fstype": "squashfs"},
    )
    before = digest(image)
    specs = data_disks(run_dir, wanted, {"data": image, "ro": image, "sq": image})
    assert [(s.name, s.path, s.format, s.readonly) for s in specs] == [
        ("disk:data", run_dir / "disk-data.qcow2", "qcow2", False),
        ("disk:ro", image, "raw", True),
        ("disk:sq", image, "raw", True),
    ]
    assert qcow2_backing(run_dir / "disk-data.qcow2") == str(image.resolve())
    overlay = (run_dir / "disk-data.qcow2").stat()
    again = data_disks(run_dir, wanted, {"data": image, "ro": image, "sq": image})
    assert (
        again == specs and (run_dir / "disk-data.qcow2").stat().st_mtime_ns == overlay.st_mtime_ns
    )
    assert digest(image) == before


def test_a_new_empty_disk_is_a_sparse_ext4_file_made_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    wanted = disks({"name": "scratch", "size": "64M", "fstype": "ext4"})
    (spec,) = data_disks(run_dir, wanted, {})
    assert (spec.path, spec.format, spec.readonly) == (run_dir / "disk-scratch.raw", "raw", False)
    assert spec.path.stat().st_size == 64 << 20
    assert spec.path.stat().st_blocks * 512 < 64 << 20  # sparse
    probe = subprocess.run(["dumpe2fs", "-h", str(spec.path)], capture_output=True, text=True)
    assert "Filesystem volume name:   scratch" in probe.stdout
    spec.path.write_bytes(b"guest data")  # what the guest wrote: kept on the next start
    data_disks(run_dir, wanted, {})
    assert spec.path.read_bytes() == b"guest data"
    assert [p.name for p in run_dir.iterdir()] == ["disk-scratch.raw"]


def test_a_disk_whose_image_left_the_cache_is_an_error(tmp_path: Path, image: Path) -> None:
    wanted = disks({"name": "data", "source": "/d.img"})
    with pytest.raises(DiskError, match="image of disk data is no longer in the artifact cache"):
        data_disks(tmp_path / "run", wanted, {})
    data_disks(tmp_path / "run", wanted, {"data": image})
    image.chmod(0o644)
    image.unlink()
    with pytest.raises(DiskError, match="no longer in the artifact cache"):
        data_disks(tmp_path / "run", wanted, {"data": image})
