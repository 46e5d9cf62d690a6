"""Container images become microVMs, end to end: registry → `fledge build` → volantd → page.

Images the tests build themselves are pushed to a real `docker-registry` on 127.0.0.1: a
musl/static busybox web server running as a non-root user, a glibc web server with its ELF
closure, a multi-layer image with whiteouts and an opaque directory over the busybox layers,
and a multi-arch index. Each is converted by the real `fledge` CLI (`--insecure-http`: the
registry is plain HTTP), installed into a real volantd, booted, and its page fetched through
the port volantd forwards for the image's ExposedPorts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.oci_images import (
    BUSYBOX_CMD,
    BUSYBOX_ENTRYPOINT,
    BUSYBOX_INDEX_HTML,
    BUSYBOX_USER,
    GLIBC_GREETING,
    build_image,
    busybox_image,
    glibc_image,
    multiarch_index,
    whiteout_image,
)
from support.registry import Registry, run_registry
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.vm

FLEDGE = Path(sys.executable).parent / "fledge"
BOOT_TIMEOUT = 240


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry holding the four test images."""
    with run_registry(tmp_path_factory.mktemp("registry")) as running:
        busybox = busybox_image()
        layered = build_image(
            [*busybox.layers, *whiteout_image().layers],
            entrypoint=BUSYBOX_ENTRYPOINT, cmd=BUSYBOX_CMD, user=BUSYBOX_USER,
            exposed_ports=["8080/tcp"],
        )  # fmt: skip
        running.push("apps/busybox", busybox)
        running.push("apps/glibc", glibc_image(tmp_path_factory.mktemp("glibc")))
        running.push("apps/layered", layered)
        running.push("apps/multiarch", multiarch_index())
        yield running


@pytest.fixture(scope="module")
def daemon(home: Path, daemon_env: dict[str, str]) -> Iterator[Volantd]:
    """volantd; VMs a failing test leaves behind stop with it."""
    with running_volantd(home, "--stop-vms-on-exit", env=daemon_env) as running:
        yield running


def fledge_build(registry: Registry, repository: str, folder: Path) -> subprocess.CompletedProcess:
    """`fledge build` of an oci_rootfs fledge.toml for ``repository`` into ``folder/build``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "fledge.toml"
    config.write_text(
        'version = "1"\nstrategy = "oci_rootfs"\n\n'
        f'[source]\nimage = "{registry.reference(repository)}"\n\n'
        '[filesystem]\ntype = "ext4"\n'
    )
    return subprocess.run(
        [str(FLEDGE), "build", "-c", str(config), "--insecure-http", "--name", repository[5:]],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def install_and_boot(daemon: Volantd, manifest: Path, vm: str) -> dict:
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        installed = client.post("/api/v1/plugins", json={"source": str(manifest)})
        assert installed.status_code == 201, installed.text
        plugin = installed.json()["name"]
        created = client.post("/api/v1/vms?wait=healthy", json={"name": vm, "plugin": plugin})
        assert created.status_code == 201, created.text
        return created.json()


def page(vm: dict) -> str:
    (port,) = [lease["host_port"] for lease in vm["ports"] if lease["purpose"].startswith("expose")]
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=20).text


def run_in(daemon: Volantd, vm: str, cmd: list[str] | str) -> str:
    with daemon.client(timeout=60) as client:
        ran = client.post(f"/api/v1/vms/{vm}/exec", json={"cmd": cmd})
    assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text
    return str(ran.json()["stdout"])


def test_a_static_busybox_image_serves_as_its_user_keeps_writes_and_rebuilds_nothing(
    registry: Registry, daemon: Volantd, tmp_path: Path
) -> None:
    built = fledge_build(registry, "apps/busybox", tmp_path)
    assert built.returncode == 0, built.stderr
    manifest_path = tmp_path / "build" / "plugin.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["workload"]["entrypoint"] == BUSYBOX_ENTRYPOINT
    assert manifest["workload"]["args"] == BUSYBOX_CMD
    assert manifest["workload"]["user"] == BUSYBOX_USER
    assert manifest["image_digest"] == registry.push("apps/busybox", busybox_image())

    vm = install_and_boot(daemon, manifest_path, "oci-busybox")
    assert page(vm) == BUSYBOX_INDEX_HTML
    assert run_in(daemon, "oci-busybox", "ps -o user,args | grep '[h]ttpd'").split()[0] in (
        "1000", "app",
    )  # fmt: skip

    run_in(daemon, "oci-busybox", "echo survived > /root-note && sync")
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        restarted = client.post("/api/v1/vms/oci-busybox/restart?wait=healthy")
        assert restarted.status_code == 200, restarted.text
    assert run_in(daemon, "oci-busybox", ["cat", "/root-note"]) == "survived\n"

    artifact = tmp_path / "build" / "plugin.img"
    before = artifact.stat().st_mtime_ns
    again = fledge_build(registry, "apps/busybox", tmp_path)
    assert again.returncode == 0, again.stderr
    assert "up to date (cache hit)" in again.stdout
    assert artifact.stat().st_mtime_ns == before
    with daemon.client(timeout=60) as client:
        assert client.delete("/api/v1/vms/oci-busybox").status_code == 204


def test_a_glibc_image_serves_its_page(registry: Registry, daemon: Volantd, tmp_path: Path) -> None:
    built = fledge_build(registry, "apps/glibc", tmp_path)
    assert built.returncode == 0, built.stderr
    vm = install_and_boot(daemon, tmp_path / "build" / "plugin.manifest.json", "oci-glibc")
    assert GLIBC_GREETING in page(vm)
    with daemon.client(timeout=60) as client:
        assert client.delete("/api/v1/vms/oci-glibc").status_code == 204


def test_whiteouts_and_opaque_directories_reach_the_booted_disk(
    registry: Registry, daemon: Volantd, tmp_path: Path
) -> None:
    built = fledge_build(registry, "apps/layered", tmp_path)
    assert built.returncode == 0, built.stderr
    vm = install_and_boot(daemon, tmp_path / "build" / "plugin.manifest.json", "oci-layered")
    assert page(vm) == BUSYBOX_INDEX_HTML
    listing = run_in(daemon, "oci-layered", "ls /etc/keep /etc/remove-me /opt 2>&1; ls /data/old")
    assert "/etc/keep" in listing and "opt/gone" not in listing
    assert "remove-me: No such file" in listing
    assert run_in(daemon, "oci-layered", ["ls", "/data/old"]) == "new.txt\n"
    inodes = run_in(daemon, "oci-layered", ["ls", "-i", "/srv/original", "/srv/hardlink"])
    first, second = (line.split()[0] for line in inodes.splitlines())
    assert first == second  # the hardlink is one inode on the disk
    with daemon.client(timeout=60) as client:
        assert client.delete("/api/v1/vms/oci-layered").status_code == 204


def test_a_multi_arch_index_boots_its_linux_amd64_image(
    registry: Registry, daemon: Volantd, tmp_path: Path
) -> None:
    built = fledge_build(registry, "apps/multiarch", tmp_path)
    assert built.returncode == 0, built.stderr
    assert "(linux/amd64)" in built.stdout
    vm = install_and_boot(daemon, tmp_path / "build" / "plugin.manifest.json", "oci-multi")
    assert page(vm) == BUSYBOX_INDEX_HTML
    with daemon.client(timeout=60) as client:
        assert client.delete("/api/v1/vms/oci-multi").status_code == 204
