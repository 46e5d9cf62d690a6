"""``/api/v1/vfio`` of a real volantd whose sysfs is a fake one (``VOLANT_SYSFS_ROOT``).

No real PCI device or IOMMU exists on the machines these tests run on (real passthrough needs
a KVM host): the tree of tests/support/sysfs.py stands in for /sys of such a host, and its
fake kernel, running on a thread of this process, reacts to the daemon's writes the way
Linux would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.manifests import artifact, manifest
from support.sysfs import (
    BRIDGE,
    GPU,
    GPU_AUDIO,
    HOST_ALLOWLIST,
    LONELY,
    NIC,
    NVME,
    FakeKernel,
    kvm_host,
)
from support.volantd import Volantd, running_volantd
from volantd.store import open_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKernel]:
    with kvm_host(tmp_path_factory.mktemp("host") / "sys").running() as kernel:
        yield kernel


def vfio_env(kernel: FakeKernel) -> dict[str, str]:
    return {"VOLANT_SYSFS_ROOT": str(kernel.root),
            "VOLANT_VFIO_ALLOWLIST": ",".join(HOST_ALLOWLIST)}  # fmt: skip


@pytest.fixture(scope="module")
def daemon(host: FakeKernel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volantd]:
    home = tmp_path_factory.mktemp("vfio") / "home"
    with running_volantd(home, env=vfio_env(host)) as volantd:
        yield volantd


@pytest.fixture
def api(daemon: Volantd) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


def post(api: httpx.Client, path: str, **body: object) -> httpx.Response:
    return api.post(f"/api/v1/vfio/devices/{path}", json=body)


def test_info_describes_a_device_and_names_what_is_wrong(api: httpx.Client) -> None:
    info = post(api, "info", pci_address="01:00.0")
    assert info.status_code == 200, info.text
    assert info.json() == {
        "address": GPU, "vendor": "10de", "device": "1db6", "class": "030200",
        "driver": "nouveau", "driver_override": None, "iommu_group": 1, "numa_node": 0,
        "bridge": False, "claim": None,
    }  # fmt: skip
    missing = post(api, "info", pci_address="0000:09:00.0")
    assert missing.status_code == 404
    assert "no PCI device 0000:09:00.0 on this host" in missing.json()["error"]
    invalid = post(api, "info", pci_address="../../etc")
    assert invalid.status_code == 422
    [issue] = invalid.json()["issues"]
    assert issue["path"] == "body.pci_address" and "is not a PCI address" in issue["message"]


def test_validate_always_answers_with_every_problem(api: httpx.Client) -> None:
    ok = post(api, "validate", pci_addresses=[NIC, LONELY])
    assert ok.json() == {"valid": True, "message": "all devices can be passed through",
                         "errors": []}  # fmt: skip
    bad = post(api, "validate", pci_addresses=["zz", NVME, GPU], allowlist=["10de:*"])
    assert bad.status_code == 200
    assert bad.json()["valid"] is False
    assert [error.split(" ")[0] for error in bad.json()["errors"]] == [
        "'zz'", NVME, GPU,
    ]  # fmt: skip
    assert post(api, "validate", pci_addresses=[]).status_code == 422


def test_groups_list_every_member(api: httpx.Client) -> None:
    groups = post(api, "iommu-groups", pci_addresses=[GPU, NIC])
    assert [(group["id"], group["devices"]) for group in groups.json()] == [
        (1, [GPU]),
        (2, [NIC]),
    ]
    members = groups.json()[0]["members"]
    assert [(m["address"], m["bridge"]) for m in members] == [
        (BRIDGE, True), (GPU, False), (GPU_AUDIO, False),
    ]  # fmt: skip


def test_bind_and_unbind_give_the_device_back_to_its_driver(
    api: httpx.Client, host: FakeKernel
) -> None:
    bound = post(api, "bind", pci_addresses=[NIC])
    assert bound.status_code == 200, bound.text
    assert bound.json()["bound_devices"] == [NIC]
    assert bound.json()["devices"] == [
        {"address": NIC, "driver": "vfio-pci", "original_driver": "igb"}
    ]
    assert host.driver_of(NIC) == "vfio-pci"
    [claim] = api.get("/api/v1/vfio/claims").json()
    assert (claim["address"], claim["vm_name"], claim["original_driver"]) == (NIC, None, "igb")
    paths = post(api, "group-paths", pci_addresses=[NIC]).json()["group_paths"]
    assert paths == [str(host.root / "bus" / "pci" / "devices" / NIC)]
    unbound = post(api, "unbind", pci_addresses=[NIC])
    assert unbound.status_code == 200, unbound.text
    [device] = unbound.json()["devices"]
    assert device == {"address": NIC, "driver": "igb", "original_driver": "igb"}
    assert host.driver_of(NIC) == "igb" and host.override_of(NIC) is None
    assert api.get("/api/v1/vfio/claims").json() == []
    assert not any(path.endswith("new_id") for path, _ in host.writes)


@pytest.mark.parametrize(
    ("addresses", "status", "message"),
    [
        ([NVME], 403, "is not in volantd's VFIO allow-list"),
        ([GPU], 409, "shares IOMMU group 1 with 0000:01:00.1"),
        ([BRIDGE], 422, "is a PCI bridge"),
        (["0000:09:00.0"], 404, "no PCI device 0000:09:00.0"),
    ],
)
def test_refused_binds_change_nothing(
    api: httpx.Client, host: FakeKernel, addresses: list[str], status: int, message: str
) -> None:
    before = len(host.writes)
    refused = post(api, "bind", pci_addresses=addresses)
    assert refused.status_code == status, refused.text
    assert message in refused.json()["error"]
    assert len(host.writes) == before
    assert post(api, "group-paths", pci_addresses=[NIC]).status_code == 409  # not bound


def test_a_vm_with_devices_is_refused_by_qemu_before_anything_is_bound(
    api: httpx.Client, host: FakeKernel, tmp_path: Path
) -> None:
    image, checksum = artifact(tmp_path, "vm.cpio", b"an initramfs")
    assert api.post("/api/v1/plugins", json=manifest("nic", str(image), checksum)).is_success
    before = len(host.writes)
    created = api.post(
        "/api/v1/vms",
        json={"name": "nic-vm", "plugin": "nic",
              "config": {"devices": {"pci_passthrough": [NIC]}}},
    )  # fmt: skip
    assert created.status_code == 409, created.text
    assert created.json()["error"] == (
        "devices.pci_passthrough: QEMU microvm has no PCI bus: VFIO passthrough needs the "
        "cloud-hypervisor driver on a KVM host"
    )
    assert api.get("/api/v1/vms/nic-vm").status_code == 404
    assert len(host.writes) == before and host.driver_of(NIC) == "igb"


def test_a_daemon_start_gives_back_the_devices_of_vms_that_are_gone(
    host: FakeKernel, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with running_volantd(home, env=vfio_env(host)) as volantd, volantd.client() as api:
        assert post(api, "bind", pci_addresses=[LONELY]).status_code == 200
    assert host.driver_of(LONELY) == "vfio-pci"
    # as a VM that held the device would have left it: claimed for a VM that no longer runs
    with open_database(home / "volant.db") as db:
        db.device_claims.release(LONELY)
        db.device_claims.claim("gone-vm", {LONELY: None})
    with running_volantd(home, env=vfio_env(host)) as volantd, volantd.client() as api:
        assert api.get("/api/v1/vfio/claims").json() == []
    assert (host.driver_of(LONELY), host.override_of(LONELY)) == (None, None)
