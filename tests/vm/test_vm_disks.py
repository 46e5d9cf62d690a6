"""A plugin's extra disks through a real volantd: images, a new empty disk, mounts.

The example initramfs plugin gets three disks: an ext4 data disk built from a small tree
(writable: each VM writes to its own overlay), a read-only ext4 disk, and a new empty 64M
disk volantd formats. kestrel mounts them at /data, /ro and /scratch before the workload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.root_disks import make_ext4, sha256_of, write
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.vm

VM = "disks-1"
TIMEOUT = 240


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small ext4 images, each holding a file that says which disk it is."""
    folder = tmp_path_factory.mktemp("disk-images")
    made = {}
    for name in ("data", "ro"):
        tree = folder / f"{name}-tree"
        write(tree, "/which", f"{name}-disk\n")
        made[name] = make_ext4(tree, folder / f"{name}.ext4", size_mb=8)
    return made


@pytest.fixture(scope="module")
def disk_manifest(example_manifest: Path, images: dict[str, Path]) -> Path:
    """The example plugin's manifest with the disks added, next to its initramfs."""
    manifest = json.loads(example_manifest.read_text())
    manifest["disks"] = [
        {"name": "data", "source": str(images["data"]), "fstype": "ext4", "mount": "/data"},
        {
            "name": "ro",
            "source": str(images["ro"]),
            "fstype": "ext4",
            "readonly": True,
            "mount": "/ro",
        },
        {"name": "scratch", "size": "64M", "fstype": "ext4", "mount": "/scratch"},
    ]
    path = example_manifest.with_name("with-disks.json")
    path.write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def daemon(home: Path, daemon_env: dict[str, str], disk_manifest: Path) -> Iterator[Volantd]:
    with running_volantd(home, "--stop-vms-on-exit", env=daemon_env) as running:
        with running.client() as client:
            installed = client.post("/api/v1/plugins", json={"source": str(disk_manifest)})
            assert installed.status_code == 201, installed.text
        yield running


def run(client: httpx.Client, script: str) -> dict:
    ran = client.post(f"/api/v1/vms/{VM}/exec", json={"cmd": ["sh", "-c", script]})
    assert ran.status_code == 200, ran.text
    return ran.json()


def test_the_guest_sees_the_disks_in_the_listed_order_mounted(daemon: Volantd) -> None:
    with daemon.client(timeout=TIMEOUT) as client:
        created = client.post(
            "/api/v1/vms?wait=healthy", json={"name": VM, "plugin": "busybox-httpd"}
        )
        assert created.status_code == 201, created.text
        mounts = run(client, "cat /proc/mounts")["stdout"]
        assert "/dev/vda /data ext4 rw" in mounts, mounts
        assert "/dev/vdb /ro ext4 ro" in mounts, mounts
        assert "/dev/vdc /scratch ext4 rw" in mounts, mounts
        assert run(client, "cat /data/which /ro/which")["stdout"] == "data-disk\nro-disk\n"
        serial = client.get(f"/api/v1/vms/{VM}/serial").text
        assert "disk ro: /dev/vdb (ext4) mounted on /ro read-only" in serial


def test_writes_survive_a_restart_and_a_read_only_disk_refuses_them(
    daemon: Volantd, images: dict[str, Path]
) -> None:
    before = {name: sha256_of(image) for name, image in images.items()}
    with daemon.client(timeout=TIMEOUT) as client:
        wrote = run(client, "echo kept > /data/note && echo also > /scratch/note && sync")
        assert wrote["exit_code"] == 0, wrote
        refused = run(client, "echo no > /ro/note")
        assert refused["exit_code"] != 0 and "Read-only file system" in refused["stderr"]
        restarted = client.post(f"/api/v1/vms/{VM}/restart?wait=healthy")
        assert restarted.status_code == 200, restarted.text
        after = run(client, "cat /data/note /scratch/note /data/which")
        assert after["stdout"] == "kept\nalso\ndata-disk\n", after
    cached = [
        path
        for path in daemon.home.rglob("*")
        if path.is_file() and path.stat().st_size == images["data"].stat().st_size
    ]
    hashes = {sha256_of(path) for path in cached}
    assert before["data"] in hashes and before["ro"] in hashes  # the cached images are unchanged
    assert {name: sha256_of(image) for name, image in images.items()} == before


def test_delete_removes_the_vms_disk_files(daemon: Volantd) -> None:
    overlays = list(daemon.home.rglob("disk-data.qcow2")) + list(
        daemon.home.rglob("disk-scratch.raw")
    )
    assert len(overlays) == 2, overlays
    assert not list(daemon.home.rglob("disk-ro.*"))  # read-only: the cached image itself
    with daemon.client(timeout=TIMEOUT) as client:
        deleted = client.delete(f"/api/v1/vms/{VM}")
        assert deleted.status_code in (200, 204), deleted.text
    assert not any(path.exists() for path in overlays)
