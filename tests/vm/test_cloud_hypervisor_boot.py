"""The Cloud Hypervisor contract: the example plugin boots under CH through volantd and its
agent (kestrel) answers, over the bridge, and over hybrid vsock for a VM without a NIC.

Runs only where `cloud-hypervisor` (on PATH or $CLOUDHYPERVISOR, v50.1 or newer) and a
working KVM exist: the driver's own availability check and KVM probe decide, and the test is
skipped with their reason otherwise (docs/testing.md). CH has no user-mode networking, so
the VM is bridged: volantd runs in a network namespace of the test's own, with a bridge made
by `volar setup --bridge-only`, and no packet leaves it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.netns import Namespace, namespaces_supported, netns
from support.volantd import Volantd, running_volantd
from volantd.errors import VolantError
from volantd.hypervisors import CloudHypervisorDriver

VOLAR = Path(sys.executable).parent / "volar"
BRIDGE = "vbr0"
GATEWAY = "192.168.127.1"


@pytest.fixture(scope="module")
def cloud_hypervisor(reference_kernel, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CH binary, once the driver proves it can boot the reference kernel here."""
    if why := namespaces_supported():
        pytest.skip(why)
    driver = CloudHypervisorDriver(cache_dir=tmp_path_factory.mktemp("ch-cache"))
    capabilities = driver.capabilities()
    if not capabilities.available:
        pytest.skip(f"Cloud Hypervisor cannot run VMs here: {capabilities.reason}")
    try:
        driver.require_kvm(driver.boot_kernel(reference_kernel.image))
    except VolantError as error:
        pytest.skip(str(error))
    return driver.binary


@pytest.fixture(scope="module")
def host(cloud_hypervisor: str) -> Iterator[Namespace]:
    with netns("vch") as namespace:
        yield namespace


@pytest.fixture(scope="module")
def daemon(
    host: Namespace,
    cloud_hypervisor: str,
    home: Path,
    daemon_env: dict[str, str],
    example_manifest: Path,
) -> Iterator[Volantd]:
    """volantd with Cloud Hypervisor as its default hypervisor, in `host`."""
    host.run(str(VOLAR), "setup", "--bridge-only", "--yes", "--bridge-name", BRIDGE,
             "--subnet", "192.168.127.0/24", env={"VOLANT_HOME": str(home)})  # fmt: skip
    env = {
        **daemon_env,
        "VOLANT_DNS": GATEWAY,
        "VOLANT_HYPERVISOR": "cloud-hypervisor",
        "CLOUDHYPERVISOR": cloud_hypervisor,
    }
    with running_volantd(home, "--stop-vms-on-exit", env=env, netns=host.name) as daemon:
        with daemon.client() as api:
            installed = api.post("/api/v1/plugins", json={"source": str(example_manifest)})
            assert installed.status_code == 201, installed.text
        yield daemon


def test_the_example_plugin_boots_under_cloud_hypervisor_and_its_agent_answers(
    daemon: Volantd,
) -> None:
    with daemon.client(timeout=240) as api:
        body = {"name": "ch-web", "plugin": "busybox-httpd",
                "config": {"network": {"mode": "bridged"}}}  # fmt: skip
        created = api.post("/api/v1/vms?wait=healthy", json=body)
        assert created.status_code == 201, created.text
        try:
            vm = created.json()
            assert (vm["status"], vm["hypervisor"], vm["accel"]) == (
                "running", "cloud-hypervisor", "kvm",
            )  # fmt: skip
            assert "agent_ready" in vm["boot"]["steps"]
            ran = api.post("/api/v1/vms/ch-web/exec", json={"cmd": ["cat", "/proc/cmdline"]})
            assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text
            serial = api.get("/api/v1/vms/ch-web/serial").text
            assert "Linux version" in serial and "volant-event" in serial
            user_mode = api.post("/api/v1/vms", json={"name": "ch-user", "plugin": "busybox-httpd"})
            assert user_mode.status_code == 422
            assert "needs user-mode networking" in user_mode.json()["error"]
            stopped = api.post("/api/v1/vms/ch-web/stop")
            assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        finally:
            api.delete("/api/v1/vms/ch-web")


def test_an_isolated_vm_has_no_nic_and_its_agent_answers_over_vsock(daemon: Volantd) -> None:
    with daemon.client(timeout=240) as api:
        body = {"name": "ch-quiet", "plugin": "busybox-httpd",
                "config": {"network": {"mode": "isolated"}}}  # fmt: skip
        created = api.post("/api/v1/vms?wait=healthy", json=body)
        assert created.status_code == 201, created.text
        try:
            vm = created.json()
            assert vm["agent_url"].startswith("http://127.0.0.1:") and vm["ip_address"] == ""
            assert vm["ports"] == []  # nothing is published without a NIC
            links = api.post("/api/v1/vms/ch-quiet/exec", json={"cmd": ["ls", "/sys/class/net"]})
            assert links.status_code == 200, links.text
            assert links.json()["stdout"].split() == ["lo"]  # exec went over vsock
            page = api.get("/api/v1/vms/ch-quiet/proxy/")  # the workload, through the agent
            assert page.status_code == 200 and "Hello from a Volant microVM" in page.text
        finally:
            api.delete("/api/v1/vms/ch-quiet")
