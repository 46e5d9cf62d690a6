"""Choosing a VM's hypervisor through the API: a hypervisor this host cannot run is refused at
once (409, with the reason), never left to hang; the VM object says which hypervisor runs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.manifests import artifact, manifest
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volantd]:
    """volantd on a host without Cloud Hypervisor (CLOUDHYPERVISOR names no file)."""
    home = tmp_path_factory.mktemp("volantd") / "home"
    env = {"CLOUDHYPERVISOR": str(home / "no-such-cloud-hypervisor")}
    with running_volantd(home, env=env) as running:
        folder = tmp_path_factory.mktemp("plugin")
        image, checksum = artifact(folder, "vm.cpio", b"an initramfs")
        with running.client() as client:
            created = client.post("/api/v1/plugins", json=manifest("tiny", str(image), checksum))
            assert created.status_code == 201, created.text
        yield running


def test_a_vm_asking_for_an_unavailable_hypervisor_is_refused_with_the_reason(
    daemon: Volantd,
) -> None:
    with daemon.client(timeout=10) as client:
        body = {"name": "on-ch", "plugin": "tiny", "config": {"hypervisor": "cloud-hypervisor"}}
        refused = client.post("/api/v1/vms", json=body)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error.startswith("hypervisor cloud-hypervisor cannot run VMs on this host: ")
        assert "CLOUDHYPERVISOR=" in error and "is not an executable file" in error
        assert client.get("/api/v1/vms/on-ch").status_code == 404


def test_a_vm_records_the_hypervisor_it_runs_under(daemon: Volantd) -> None:
    with daemon.client() as client:
        created = client.post("/api/v1/vms?start=false", json={"name": "plain", "plugin": "tiny"})
        assert created.status_code == 201, created.text
        assert created.json()["hypervisor"] == "qemu"


def test_an_unknown_default_hypervisor_stops_volantd_from_starting(tmp_path: Path) -> None:
    with (
        pytest.raises(AssertionError, match=r"volantd exited(.|\n)*VOLANT_HYPERVISOR"),
        running_volantd(tmp_path / "home", env={"VOLANT_HYPERVISOR": "firecracker"}),
    ):
        pass
