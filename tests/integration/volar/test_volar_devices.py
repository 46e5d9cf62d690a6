"""`volar devices` and `volar vms create --device` against a real volantd on a fake sysfs.

No real PCI device or IOMMU exists on the machines these tests run on (real passthrough needs
a KVM host): the tree of tests/support/sysfs.py stands in for /sys, and its fake kernel, on a
thread of this process, reacts to volantd's writes as Linux would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.manifests import artifact, manifest
from support.sysfs import GPU, HOST_ALLOWLIST, NIC, NVME, FakeKernel, kvm_host
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.integration

VOLAR = Path(sys.executable).parent / "volar"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKernel]:
    with kvm_host(tmp_path_factory.mktemp("host") / "sys").running() as kernel:
        yield kernel


@pytest.fixture(scope="module")
def daemon(host: FakeKernel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volantd]:
    env = {"VOLANT_SYSFS_ROOT": str(host.root),
           "VOLANT_VFIO_ALLOWLIST": ",".join(HOST_ALLOWLIST)}  # fmt: skip
    with running_volantd(tmp_path_factory.mktemp("volar") / "home", env=env) as volantd:
        yield volantd


def volar(daemon: Volantd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOLAR), "--api", daemon.url, *args], capture_output=True, text=True, timeout=60
    )


def test_bind_claims_and_unbind(daemon: Volantd, host: FakeKernel) -> None:
    info = volar(daemon, "devices", "info", "02:00.0")
    assert info.returncode == 0, info.stderr
    assert "8086:1533" in info.stdout and "igb" in info.stdout
    bound = volar(daemon, "devices", "bind", NIC)
    assert bound.returncode == 0, bound.stderr
    assert host.driver_of(NIC) == "vfio-pci"
    claims = json.loads(volar(daemon, "devices", "claims", "-o", "json").stdout)
    assert [(c["address"], c["vm_name"], c["original_driver"]) for c in claims] == [
        (NIC, None, "igb")
    ]
    assert "operator" in volar(daemon, "devices", "claims").stdout
    unbound = volar(daemon, "devices", "unbind", NIC)
    assert unbound.returncode == 0, unbound.stderr
    assert host.driver_of(NIC) == "igb"


def test_problems_are_one_line_and_exit_1(daemon: Volantd, host: FakeKernel) -> None:
    assert volar(daemon, "devices", "validate", NIC).returncode == 0
    invalid = volar(daemon, "devices", "validate", NVME, GPU)
    assert invalid.returncode == 1
    assert "not in volantd's VFIO allow-list" in invalid.stderr
    assert "shares IOMMU group 1" in invalid.stderr
    refused = volar(daemon, "devices", "bind", NVME)
    assert refused.returncode == 1 and "VOLANT_VFIO_ALLOWLIST" in refused.stderr
    groups = volar(daemon, "devices", "groups", GPU)
    assert groups.returncode == 0 and "0000:01:00.1" in groups.stdout


def test_vms_create_passes_devices_in_the_config(
    daemon: Volantd, host: FakeKernel, tmp_path: Path
) -> None:
    _, checksum = artifact(tmp_path, "nic.cpio", b"an image")
    (tmp_path / "plugin.json").write_text(json.dumps(manifest("nic", "nic.cpio", checksum)))
    assert volar(daemon, "plugins", "install", str(tmp_path / "plugin.json")).returncode == 0
    created = volar(daemon, "vms", "create", "nic-vm", "--plugin", "nic", "--device", NIC,
                    "--device", "0000:04:00.0", "--no-start")  # fmt: skip
    # the daemon's hypervisor is QEMU: refused before anything is bound
    assert created.returncode == 1
    assert "QEMU microvm has no PCI bus: VFIO passthrough needs the cloud-hypervisor" in (
        created.stderr
    )
    assert host.driver_of(NIC) == "igb"
