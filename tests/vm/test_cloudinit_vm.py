"""Cloud-init through volantd: a plugin's seed documents (a file next to its manifest, read at
install), a VM config's override, the seed built and attached read-only as the VM's last
disk, and a real guest that mounts it and prints what it finds.

A rootfs image that runs cloud-init itself is too large to build here, so the guest reads the
seed with busybox instead of cloud-init.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.volantd import Volantd, running_volantd

USER_DATA = "#cloud-config\nruncmd:\n  - [echo, from-the-plugin]\n"


@pytest.fixture(scope="module")
def daemon(home: Path, daemon_env: dict[str, str], example_manifest: Path) -> Iterator[Volantd]:
    """volantd with `seeded`: the example plugin plus a cloud_init whose user-data is a file."""
    manifest = json.loads(example_manifest.read_text())
    manifest.update(name="seeded", runtime="seeded")
    manifest["cloud_init"] = {"user_data": {"path": "user-data.yaml"}}
    folder = example_manifest.parent
    (folder / "user-data.yaml").write_text(USER_DATA)
    seeded = folder / "seeded.manifest.json"
    seeded.write_text(json.dumps(manifest))
    with running_volantd(home, "--stop-vms-on-exit", env=daemon_env) as daemon:
        with daemon.client() as api:
            installed = api.post("/api/v1/plugins", json={"source": str(seeded)})
            assert installed.status_code == 201, installed.text
        yield daemon


def run_in(api: httpx.Client, vm: str, script: str) -> str:
    ran = api.post(f"/api/v1/vms/{vm}/exec", json={"cmd": ["sh", "-c", script]})
    assert ran.status_code == 200, ran.text
    assert ran.json()["exit_code"] == 0, ran.json()
    return ran.json()["stdout"]


def seed_in_guest(api: httpx.Client, vm: str) -> dict[str, str]:
    """The seed as vm.json describes it, mounted in the guest: its device, then its files."""
    contract = json.loads(run_in(api, vm, "cat /etc/volant/vm.json"))
    (seed,) = [disk for disk in contract["disks"] if disk["name"] == "cloud-init"]
    assert seed["readonly"] and seed["mount"] is None  # the agent leaves it to cloud-init
    device, fstype = seed["device"], seed["fstype"]
    listing = run_in(api, vm, f"""
        mkdir -p /seed && mount -t {fstype} -o ro {device} /seed
        echo "device={device} fstype={fstype} read-only=$(cat /sys/block/{device[5:]}/ro)"
        for file in /seed/*; do echo "=== ${{file#/seed/}}"; cat "$file"; done
    """)  # fmt: skip
    head, *sections = listing.split("=== ")
    files = {"": head}
    for section in sections:
        name, _, text = section.partition("\n")
        files[name] = text
    return files


def test_the_plugins_seed_with_a_vm_override_reaches_the_guest(daemon: Volantd) -> None:
    with daemon.client(timeout=240) as api:
        stored = api.get("/api/v1/plugins/seeded/manifest").json()
        assert stored["cloud_init"]["user_data"] == {"inline": True, "content": USER_DATA,
                                                     "path": None}  # fmt: skip
        body = {"name": "ci-1", "plugin": "seeded",
                "config": {"cloud_init": {"meta_data": {"content": "region: lab\n"}}}}  # fmt: skip
        created = api.post("/api/v1/vms?wait=agent", json=body)
        assert created.status_code == 201, created.text
        vm = created.json()
        try:
            files = seed_in_guest(api, "ci-1")
            # the example plugin has no disks: the seed is the only one, /dev/vda
            assert "device=/dev/vda fstype=vfat read-only=1" in files[""]
            assert files["user-data"] == USER_DATA  # byte for byte, newline kept
            assert files["meta-data"] == (
                f"region: lab\ninstance-id: volant-{vm['id']}\nlocal-hostname: ci-1\n"
            )
            # user mode: the generated network-config matches the NIC volantd gave it
            assert vm["mac_address"] in files["network-config"]
            assert "10.0.2.15/24" in files["network-config"]
        finally:
            api.delete("/api/v1/vms/ci-1")


def test_an_iso9660_seed_and_a_seed_dropped_by_a_config_change(daemon: Volantd) -> None:
    with daemon.client(timeout=240) as api:
        body = {"name": "ci-2", "plugin": "seeded",
                "config": {"cloud_init": {"seed_mode": "iso9660"}}}  # fmt: skip
        created = api.post("/api/v1/vms?wait=agent", json=body)
        assert created.status_code == 201, created.text
        try:
            files = seed_in_guest(api, "ci-2")
            assert "fstype=iso9660" in files[""]
            assert files["user-data"] == USER_DATA
            assert set(files) == {"", "user-data", "meta-data", "network-config"}
            seed = Path(created.json()["serial_log"]).parent / "cloud-init-seed.img"
            assert seed.stat().st_mode & 0o777 == 0o600  # user-data may hold secrets
        finally:
            api.delete("/api/v1/vms/ci-2")
        assert not seed.exists()  # removed with the VM


def test_a_request_may_not_name_host_files(daemon: Volantd, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not for guests\n")
    with daemon.client() as api:
        body = {"name": "ci-3", "plugin": "seeded",
                "config": {"cloud_init": {"user_data": {"path": str(secret)}}}}  # fmt: skip
        refused = api.post("/api/v1/vms", json=body)
        assert refused.status_code == 422, refused.text
        assert "cloud_init.user_data.path" in refused.text and "content" in refused.text
        assert api.get("/api/v1/vms/ci-3").status_code == 404


def test_a_manifest_document_outside_the_plugins_folder_is_refused(
    daemon: Volantd, example_manifest: Path, tmp_path: Path
) -> None:
    manifest = json.loads(example_manifest.read_text())
    manifest.update(name="leaky", runtime="leaky")
    manifest["cloud_init"] = {"user_data": {"path": "/etc/shadow"}}
    folder = tmp_path / "leaky"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with daemon.client() as api:
        refused = api.post("/api/v1/plugins", json={"source": str(folder / "manifest.json")})
        assert refused.status_code == 422, refused.text
        assert "outside the plugin's folder" in refused.text
        assert api.get("/api/v1/plugins/leaky").status_code == 404
