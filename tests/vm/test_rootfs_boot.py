"""rootfs plugins through a real volantd: the boot initramfs, the root disk, the switch.

The images are built here from staging trees (no OCI pipeline): the host's static busybox
with `/www/index.html` and a non-root user `app` as ext4 and as squashfs, a glibc-only image
(the host's dash and coreutils with their ELF closure, no busybox), and a disk of garbage.
Each VM boots the volant boot initramfs; kestrel mounts `/dev/vda`, switches root and runs
the image's workload as the image's user.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pluginspec import parse_manifest
from support.root_disks import (
    APP_GID,
    APP_UID,
    accounts,
    busybox_tree,
    glibc_tree,
    make_ext4,
    make_squashfs,
    rootfs_manifest,
    sha256_of,
    write,
)
from support.volantd import Volantd, running_volantd
from volantd.boot.bootimage import boot_initramfs
from volantd.boot.contract import (
    guest_contract,
    guest_network,
    kernel_cmdline,
    mac_for,
    prepare_initrd,
)
from volantd.hypervisors import LaunchSpec, NetworkSpec, QemuDriver, VMState

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 240
PAGE = "<h1>Hello from a root disk</h1>\n"
HTTPD = {  # on the agent's usual port, as many OCI images serve
    "type": "http",
    "entrypoint": ["httpd"],  # found on the workload's PATH, as docker does
    "args": ["-f", "-p", "8080", "-h", "/www"],
    "user": "app",
    "workdir": "/www",
    "env": {"GREETING": "from-the-manifest"},
    "base_url": "http://127.0.0.1:8080",
    "restart": "on-failure",
}
EXPOSE = [{"name": "http", "port": 8080}]


def busybox_image(root: Path, image: Path, *, squashfs: bool = False) -> Path:
    """busybox httpd's tree: no /proc, /sys, /dev, /run or /etc/resolv.conf (kestrel makes
    the mount points) in the ext4 image; the squashfs one has them and a file in /run."""
    busybox_tree(root)
    accounts(root)
    write(root, "/www/index.html", PAGE)
    data = root / "data"
    data.mkdir()
    os.chown(data, APP_UID, APP_GID)
    if squashfs:
        for point in ("proc", "sys", "dev", "run", "tmp"):
            (root / point).mkdir(exist_ok=True)
        write(root, "/run/from-the-image", "kept\n")
        write(root, "/etc/resolv.conf", "nameserver 192.0.2.1\n")
        return make_squashfs(root, image)
    return make_ext4(root, image)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    glibc = glibc_tree(folder / "glibc", ["/bin/dash", "/bin/sleep", "/usr/bin/id", "/bin/cat"])
    (glibc / "bin/sh").symlink_to("dash")
    accounts(glibc)
    garbage = folder / "garbage.img"
    garbage.write_bytes(os.urandom(256 * 1024))
    return {
        "ext4": busybox_image(folder / "busybox", folder / "busybox.ext4"),
        "squashfs": busybox_image(folder / "squash", folder / "busybox.squashfs", squashfs=True),
        "glibc": make_ext4(glibc, folder / "glibc.ext4"),
        "garbage": garbage,
    }


@pytest.fixture(scope="module")
def daemon(home: Path, daemon_env: dict[str, str], images: dict[str, Path]) -> Iterator[Volantd]:
    """A volantd with one plugin per image."""
    manifests = {
        "disk-web": rootfs_manifest(
            "disk-web", images["ext4"], workload=HTTPD, expose=EXPOSE,
            health_check={"endpoint": "/", "timeout_ms": 60_000},
        ),
        "squash-web": rootfs_manifest(
            "squash-web", images["squashfs"], fstype="squashfs", workload=HTTPD, expose=EXPOSE,
        ),
        "glibc-job": rootfs_manifest(
            "glibc-job", images["glibc"],
            workload={"type": "process", "entrypoint": ["sleep"], "args": ["100000"],
                      "user": "app:app", "stop_signal": "SIGINT"},
        ),
        "garbage": rootfs_manifest(
            "garbage", images["garbage"], workload={"entrypoint": ["/bin/true"]}
        ),
        "disk-data": {
            **rootfs_manifest("disk-data", images["ext4"], workload=HTTPD, expose=EXPOSE),
            "disks": [{"name": "data", "size": "32M", "fstype": "ext4", "mount": "/data"}],
            "cloud_init": {"user_data": {"content": "#cloud-config\nhostname: seeded\n"}},
        },
    }  # fmt: skip
    with (
        running_volantd(home, "--stop-vms-on-exit", env=daemon_env) as running,
        running.client() as client,
    ):
        for manifest in manifests.values():
            installed = client.post("/api/v1/plugins", json=manifest)
            assert installed.status_code == 201, installed.text
        yield running


def port_of(vm: dict, purpose: str) -> int:
    return next(lease["host_port"] for lease in vm["ports"] if lease["purpose"] == purpose)


def run_in(client: httpx.Client, vm: str, cmd: list[str] | str, **extra: object) -> dict:
    ran = client.post(f"/api/v1/vms/{vm}/exec", json={"cmd": cmd, **extra})
    assert ran.status_code == 200, ran.text
    return ran.json()


def create(client: httpx.Client, name: str, plugin: str) -> dict:
    created = client.post("/api/v1/vms?wait=healthy", json={"name": name, "plugin": plugin})
    assert created.status_code == 201, created.text
    return created.json()


def blob_of(daemon: Volantd, image: Path) -> Path:
    return daemon.home / "cache" / "sha256" / sha256_of(image)


def test_the_workload_runs_from_the_root_disk_as_the_image_user(daemon: Volantd) -> None:
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        vm = create(client, "disk-1", "disk-web")
        assert vm["status"] == "running"
        assert {"init_started", "root_mounted", "workload_healthy"} <= set(vm["boot"]["steps"])
        assert "boot_image_built_ms" in vm["boot"]  # the first rootfs VM built it
        page = httpx.get(f"http://127.0.0.1:{port_of(vm, 'expose:http')}/", timeout=10)
        assert page.text == PAGE

        info = client.get("/api/v1/vms/disk-1/agent/v1/info").json()
        assert info["workload"]["state"] == "healthy"
        assert info["agent"]["listen"] == ["0.0.0.0:18080"]  # the workload has 8080
        assert info["boot"]["root_mounted_ms"] <= info["boot"]["agent_started_ms"]
        pid = info["workload"]["pid"]
        status = run_in(client, "disk-1", ["cat", f"/proc/{pid}/status"])["stdout"]
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(APP_UID)] * 4
        environ = run_in(client, "disk-1", ["cat", f"/proc/{pid}/environ"])["stdout"].split("\0")
        assert "GREETING=from-the-manifest" in environ and "USER=app" in environ
        assert "HOME=/home/app" in environ and not any(v.startswith("PYTHON") for v in environ)
        assert run_in(client, "disk-1", ["readlink", f"/proc/{pid}/cwd"])["stdout"] == "/www\n"
        assert run_in(client, "disk-1", ["id", "-u"], user="app")["stdout"] == f"{APP_UID}\n"
        assert run_in(client, "disk-1", ["id", "-u"])["stdout"] == "0\n"

        mounts = run_in(client, "disk-1", ["cat", "/proc/mounts"])["stdout"].splitlines()
        root = next(line.split() for line in mounts if line.split()[1] == "/")
        assert root[:3] == ["/dev/vda", "/", "ext4"] and "rw" in root[3].split(",")
        runtime = next(line.split() for line in mounts if line.split()[1] == "/run/volant/python")
        assert "ro" in runtime[3].split(",")
        resolv = run_in(client, "disk-1", ["cat", "/etc/resolv.conf"])["stdout"]
        assert resolv == "nameserver 10.0.2.3\n"
        serial = client.get("/api/v1/vms/disk-1/serial").text
        assert "the image has no /proc: created it on the VM's root disk" in serial


def test_a_root_disk_comes_first_then_data_disks_then_the_cloud_init_seed(
    daemon: Volantd,
) -> None:
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        create(client, "disk-2", "disk-data")
        try:
            mounts = run_in(client, "disk-2", ["cat", "/proc/mounts"])["stdout"].splitlines()
            devices = {line.split()[1]: line.split()[:3] for line in mounts}
            assert devices["/"] == ["/dev/vda", "/", "ext4"]
            assert devices["/data"] == ["/dev/vdb", "/data", "ext4"]
            contract = json.loads(
                run_in(client, "disk-2", ["cat", "/run/volant/vm.json"])["stdout"]
            )
            assert [(disk["name"], disk["device"]) for disk in contract["disks"]] == [
                ("data", "/dev/vdb"), ("cloud-init", "/dev/vdc"),
            ]  # fmt: skip
            seed = run_in(client, "disk-2", "mkdir -p /seed && mount -t vfat -o ro /dev/vdc /seed"
                          " && cat /seed/user-data")  # fmt: skip
            assert seed["stdout"] == "#cloud-config\nhostname: seeded\n", seed
        finally:
            client.delete("/api/v1/vms/disk-2")


def test_guest_writes_survive_a_restart_and_never_reach_the_image(
    daemon: Volantd, images: dict[str, Path]
) -> None:
    blob = blob_of(daemon, images["ext4"])
    digest = blob.name
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        put = client.put("/api/v1/vms/disk-1/files", params={"path": "/data/note"}, content=b"kept")
        assert put.status_code in (200, 201), put.text
        wrote = run_in(client, "disk-1", "echo by-app > /data/by-app && sync", user="app")
        assert wrote["exit_code"] == 0, wrote
        restarted = client.post("/api/v1/vms/disk-1/restart?wait=healthy")
        assert restarted.status_code == 200, restarted.text
        assert client.get("/api/v1/vms/disk-1/files", params={"path": "/data/note"}).content == (
            b"kept"
        )
        assert run_in(client, "disk-1", ["cat", "/data/by-app"])["stdout"] == "by-app\n"
        owner = run_in(client, "disk-1", ["stat", "-c", "%u", "/data/by-app"])["stdout"]
        assert owner == f"{APP_UID}\n"
    assert sha256_of(blob) == digest  # the shared image was never written
    overlay = daemon.home / "run" / "disk-1" / "root.qcow2"
    described = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(overlay)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(described.stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(blob)


def test_deleting_the_vm_removes_its_overlay_but_not_the_image(
    daemon: Volantd, images: dict[str, Path]
) -> None:
    run_dir = daemon.home / "run" / "disk-1"
    assert (run_dir / "root.qcow2").is_file()
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        assert client.delete("/api/v1/vms/disk-1").status_code == 204
        assert not run_dir.exists()
        again = create(client, "disk-1", "disk-web")  # a fresh overlay: the image as shipped
        assert "boot_image_built_ms" not in again["boot"]  # built once, then cached
        missing = client.get("/api/v1/vms/disk-1/files", params={"path": "/data/note"})
        assert missing.status_code == 404, missing.text
        assert client.delete("/api/v1/vms/disk-1").status_code == 204
    assert sha256_of(blob_of(daemon, images["ext4"])) == blob_of(daemon, images["ext4"]).name


def test_a_glibc_image_without_busybox_boots_and_stops_with_its_signal(daemon: Volantd) -> None:
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        vm = create(client, "glibc-1", "glibc-job")
        info = client.get("/api/v1/vms/glibc-1/agent/v1/info").json()
        assert info["workload"]["state"] == "healthy"
        assert info["workload"]["argv"] == ["sleep", "100000"]
        assert run_in(client, "glibc-1", ["id", "-u"], user="app")["stdout"] == f"{APP_UID}\n"
        numeric = run_in(client, "glibc-1", ["id"], user="4242:4343")["stdout"]
        assert numeric.startswith("uid=4242 gid=4343"), numeric  # no passwd entry needed
        assert run_in(client, "glibc-1", "echo $0")["stdout"] == "/bin/sh\n"  # the image's dash
        stopped = client.post("/api/v1/vms/glibc-1/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
        serial = client.get("/api/v1/vms/glibc-1/serial").text
        exits = [
            json.loads(line.split("volant-event ", 1)[1])
            for line in serial.splitlines()
            if '"workload_exited"' in line
        ]
        assert exits[-1]["signal"] == "SIGINT", exits  # the stop signal, not SIGTERM
        assert client.delete(f"/api/v1/vms/{vm['name']}").status_code == 204


def test_a_squashfs_root_is_read_only_with_writes_in_memory(
    daemon: Volantd, images: dict[str, Path]
) -> None:
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        vm = create(client, "squash-1", "squash-web")
        page = httpx.get(f"http://127.0.0.1:{port_of(vm, 'expose:http')}/", timeout=10)
        assert page.text == PAGE
        mounts = run_in(client, "squash-1", ["cat", "/proc/mounts"])["stdout"].splitlines()
        root = next(line.split() for line in mounts if line.split()[1] == "/")
        assert root[:3] == ["overlay", "/", "overlay"]
        assert run_in(client, "squash-1", ["cat", "/run/from-the-image"])["stdout"] == "kept\n"
        assert run_in(client, "squash-1", "echo x > /data/x")["exit_code"] == 0
        assert not (daemon.home / "run" / "squash-1" / "root.qcow2").exists()
        restarted = client.post("/api/v1/vms/squash-1/restart?wait=healthy")
        assert restarted.status_code == 200, restarted.text
        assert run_in(client, "squash-1", ["ls", "/data"])["stdout"] == ""
        assert client.delete("/api/v1/vms/squash-1").status_code == 204
    assert (
        sha256_of(blob_of(daemon, images["squashfs"])) == blob_of(daemon, images["squashfs"]).name
    )


def test_a_disk_without_a_filesystem_fails_the_boot_with_the_reason(daemon: Volantd) -> None:
    with daemon.client(timeout=BOOT_TIMEOUT) as client:
        created = client.post("/api/v1/vms?wait=agent", json={"name": "bad-1", "plugin": "garbage"})
        assert created.status_code >= 400
        assert "does not hold a valid ext4 filesystem" in created.json()["error"], created.text
        vm = client.get("/api/v1/vms/bad-1").json()
        assert vm["status"] == "crashed"
        assert vm["last_error"].startswith("boot failed: cannot mount /dev/vda (ext4)")
        serial = client.get("/api/v1/vms/bad-1/serial").text
        assert "kestrel: fatal: cannot mount /dev/vda (ext4) on /newroot" in serial
        assert client.delete("/api/v1/vms/bad-1").status_code == 204


def test_a_missing_root_device_is_reported_and_powers_off(
    qemu_driver: QemuDriver, reference_kernel, images: dict[str, Path], tmp_path: Path
) -> None:
    """The contract asks for /dev/vda but no disk is attached (driver-level, no volantd)."""
    manifest = parse_manifest(rootfs_manifest("nodisk", images["ext4"], workload=HTTPD))
    contract = guest_contract(
        name="nodisk", vm_id="1", manifest=manifest, kernel=reference_kernel,
        network=guest_network("user", mac_for("1")),
        drivers=qemu_driver.guest_drivers(network=True, disks=1),
    )  # fmt: skip
    run_dir = tmp_path / "vm"
    run_dir.mkdir()
    initrd = prepare_initrd(run_dir, boot_initramfs(tmp_path / "cache"), reference_kernel, contract)
    spec = LaunchSpec(
        name="nodisk", run_dir=run_dir, kernel=reference_kernel.image, initrd=initrd,
        cmdline=kernel_cmdline(), network=NetworkSpec(mac=mac_for("1")),
    )  # fmt: skip

    async def boot() -> str:
        vm = await qemu_driver.start(spec)
        try:
            for _ in range(BOOT_TIMEOUT * 10):
                status = await qemu_driver.status(vm)
                if status.state in (VMState.STOPPED, VMState.CRASHED):
                    return status.state.value
                await asyncio.sleep(0.1)
            return "still running"
        finally:
            await qemu_driver.stop(vm, timeout=1)

    assert asyncio.run(boot()) == "stopped"  # powered off by the guest, not hung
    serial = (run_dir / "serial.log").read_text(errors="replace")
    assert "kestrel: fatal: root device /dev/vda did not appear within 10 s" in serial
    assert '"event":"boot_failed"' in serial
