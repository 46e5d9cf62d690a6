"""Bridged and dhcp network modes with real taps, a real bridge, nftables and dnsmasq.

Everything runs inside network namespaces this module makes: `host` holds the bridge, the
NAT rules and volantd (on a unix socket), with real QEMU guests on taps; `client` is joined
to `host` by a veth pair and plays a machine on the network that reaches a published port.
No packet leaves these namespaces.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.netns import Namespace, namespaces_supported, netns, veth_pair
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.skipif(
    namespaces_supported() is not None, reason=str(namespaces_supported())
)

BRIDGE = "vbr0"
GATEWAY = "192.168.127.1"
HOST_SIDE = "10.78.0.1"
CLIENT_SIDE = "10.78.0.2"
VOLAR = Path(sys.executable).parent / "volar"
FETCH = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as answer:
    sys.stdout.write(answer.read().decode())
"""


def fetch(namespace: Namespace, url: str, timeout: float = 10) -> str:
    """GET `url` from inside `namespace`."""
    return namespace.run(sys.executable, "-c", FETCH, url, str(timeout), timeout=timeout + 10)


def refused(namespace: Namespace, url: str) -> bool:
    done = subprocess.run(
        namespace.command(sys.executable, "-c", FETCH, url, "3"), capture_output=True, timeout=20
    )
    return done.returncode != 0


@pytest.fixture(scope="module")
def host() -> Iterator[Namespace]:
    with netns("vhost") as namespace:
        yield namespace


@pytest.fixture(scope="module")
def client(host: Namespace) -> Iterator[Namespace]:
    with netns("vclient") as namespace:
        veth_pair(host, f"{HOST_SIDE}/30", namespace, f"{CLIENT_SIDE}/30")
        yield namespace


@pytest.fixture(scope="module")
def daemon(
    host: Namespace, home: Path, daemon_env: dict[str, str], example_manifest: Path
) -> Iterator[Volantd]:
    """volantd in the host namespace, whose bridge `volar setup --bridge` made."""
    host.run(str(VOLAR), "setup", "--bridge-only", "--yes", "--bridge-name", BRIDGE,
             "--subnet", "192.168.127.0/24", env={"VOLANT_HOME": str(home)})  # fmt: skip
    env = {**daemon_env, "VOLANT_DNS": GATEWAY}
    with running_volantd(home, "--stop-vms-on-exit", env=env, netns=host.name) as daemon:
        with daemon.client() as api:
            installed = api.post("/api/v1/plugins", json={"source": str(example_manifest)})
            assert installed.status_code == 201, installed.text
        yield daemon


def create(api: httpx.Client, name: str, network: dict, **config: object) -> dict:
    body = {"name": name, "plugin": "busybox-httpd", "config": {"network": network, **config}}
    created = api.post("/api/v1/vms?wait=healthy", json=body)
    assert created.status_code == 201, created.text
    return created.json()


def run_in(api: httpx.Client, vm: str, script: str) -> dict:
    ran = api.post(f"/api/v1/vms/{vm}/exec", json={"cmd": ["sh", "-c", script]})
    assert ran.status_code == 200, ran.text
    return ran.json()


def test_two_bridged_vms_get_addresses_in_order_and_reach_each_other_and_the_host(
    daemon: Volantd, host: Namespace
) -> None:
    with daemon.client(timeout=240) as api:
        first = create(api, "br-a", {"mode": "bridged"})
        second = create(api, "br-b", {"mode": "bridged"})
        try:
            # numeric order from the bottom of the pool, the bridge's own address skipped
            assert (first["ip_address"], second["ip_address"]) == ("192.168.127.2", "192.168.127.3")
            assert first["agent_url"] == "http://192.168.127.2:8080"
            assert first["network_mode"] == "bridged"
            # the manifest's expose entry without a host port: published on a free one
            (published,) = first["ports"]
            assert published["purpose"] == "expose:http"
            page = fetch(host, f"http://127.0.0.1:{published['host_port']}/")
            assert "Hello from a Volant microVM" in page
            ip = run_in(api, "br-a", "ip -4 -o addr show eth0; ip route")
            assert "192.168.127.2/24" in ip["stdout"] and f"default via {GATEWAY}" in ip["stdout"]
            assert run_in(api, "br-a", "cat /etc/resolv.conf")["stdout"].strip() == (
                f"nameserver {GATEWAY}"
            )
            # guest to guest over the bridge
            page = run_in(api, "br-a", "wget -q -O - http://192.168.127.3/")
            assert page["exit_code"] == 0 and "Hello from a Volant microVM" in page["stdout"]
            # the host to a guest's workload, and a guest to a server on the host
            assert "Hello from a Volant microVM" in fetch(host, "http://192.168.127.3/")
            server = host.popen(
                [sys.executable, "-m", "http.server", "8765", "--bind", GATEWAY,
                 "--directory", str(daemon.home)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                got = run_in(
                    api, "br-b", f"sleep 1; wget -q -O - http://{GATEWAY}:8765/volantd.log"
                )
                assert got["exit_code"] == 0 and "volantd" in got["stdout"], got
            finally:
                server.kill()
                server.wait()
            taps = host.run("ip", "-o", "link", "show", "master", BRIDGE)
            assert taps.count("vt-") == 2
        finally:
            api.delete("/api/v1/vms/br-a")
            api.delete("/api/v1/vms/br-b")
        assert "vt-" not in host.run("ip", "-o", "link", "show", "master", BRIDGE)
        again = create(api, "br-c", {"mode": "bridged"})
        try:  # deleted VMs gave their addresses back
            assert again["ip_address"] == "192.168.127.2"
        finally:
            api.delete("/api/v1/vms/br-c")


def test_a_published_port_is_reached_from_another_machine_and_removed_with_the_vm(
    daemon: Volantd, host: Namespace, client: Namespace
) -> None:
    with daemon.client(timeout=240) as api:
        expose = [{"name": "http", "port": 80, "host_port": 8088}]
        vm = create(api, "pub-a", {"mode": "bridged"}, expose=expose)
        try:
            assert vm["ports"] == [{"purpose": "expose:http", "host_port": 8088}]
            # from a second machine, through the host's address on its network
            assert "Hello from a Volant microVM" in fetch(client, f"http://{HOST_SIDE}:8088/")
            # and from the host itself, loopback included
            assert "Hello from a Volant microVM" in fetch(host, "http://127.0.0.1:8088/")
            assert "dnat to 192.168.127.2:80" in host.run("nft", "list", "table", "ip", "volantd")
            taken = api.post(
                "/api/v1/vms",
                json={"name": "pub-b", "plugin": "busybox-httpd",
                      "config": {"network": {"mode": "bridged"}, "expose": expose}},
            )  # fmt: skip
            assert taken.status_code == 409, taken.text
            assert "8088" in taken.json()["error"] and "pub-a" in taken.json()["error"]
            assert api.get("/api/v1/vms/pub-b").status_code == 404  # refused, not recorded
        finally:
            api.delete("/api/v1/vms/pub-a")
        assert refused(client, f"http://{HOST_SIDE}:8088/")
        assert host.run("nft", "list", "tables").count("volantd") == 0


def test_dhcp_mode_guest_asks_and_gets_its_reserved_address(
    daemon: Volantd, host: Namespace
) -> None:
    with daemon.client(timeout=240) as api:
        vm = create(api, "dh-a", {"mode": "dhcp"})
        try:
            address = vm["ip_address"]
            assert (
                address.startswith("192.168.127.") and vm["agent_url"] == f"http://{address}:8080"
            )
            ip = run_in(api, "dh-a", "ip -4 -o addr show eth0; ip route")
            assert f"{address}/24" in ip["stdout"] and f"default via {GATEWAY}" in ip["stdout"]
            info = api.get("/api/v1/vms/dh-a/agent/v1/info")
            assert info.status_code == 200, info.text
            assert f"eth0 DHCP lease {address}/24 from {GATEWAY}" in str(info.json())
            assert "dnsmasq" in host.run("ps", "-eo", "comm")
            assert "Hello from a Volant microVM" in fetch(host, f"http://{address}/")
        finally:
            api.delete("/api/v1/vms/dh-a")
        assert "dnsmasq" not in host.run("ps", "-eo", "comm")  # only while dhcp VMs run


def test_a_missing_bridge_is_a_clear_error(tmp_path: Path, daemon_env: dict[str, str],
                                           example_manifest: Path) -> None:  # fmt: skip
    with (
        netns("vbare") as bare,
        running_volantd(
            tmp_path / "home", "--stop-vms-on-exit", env=daemon_env, netns=bare.name
        ) as lonely,
        lonely.client(timeout=120) as api,
    ):
        assert api.post("/api/v1/plugins", json={"source": str(example_manifest)}).is_success
        body = {"name": "nobr", "plugin": "busybox-httpd",
                "config": {"network": {"mode": "bridged"}}}  # fmt: skip
        refused_vm = api.post("/api/v1/vms", json=body)
        assert refused_vm.status_code == 409, refused_vm.text
        error = refused_vm.json()["error"]
        assert "vbr0" in error and "volar setup --bridge" in error
        record = api.get("/api/v1/vms/nobr").json()
        assert record["status"] == "crashed" and record["ip_address"] == ""


def test_a_bridged_vm_outlives_a_killed_volantd_and_is_adopted_with_its_network(
    tmp_path: Path, daemon_env: dict[str, str], example_manifest: Path
) -> None:
    """Its own namespace and bridge: two daemons in one namespace would share the ruleset."""
    home = tmp_path / "home"
    with netns("vadopt") as own:
        own.run(str(VOLAR), "setup", "--bridge-only", "--yes", env={"VOLANT_HOME": str(home)})
        with running_volantd(home, env=daemon_env, netns=own.name) as first:
            with first.client(timeout=240) as api:
                assert api.post(
                    "/api/v1/plugins", json={"source": str(example_manifest)}
                ).is_success
                expose = [{"name": "http", "port": 80, "host_port": 8090}]
                vm = create(api, "kept", {"mode": "bridged"}, expose=expose)
            first.stop(signal.SIGKILL)
        # volantd is gone; the guest, its tap and its published port are not
        assert "Hello from a Volant microVM" in fetch(own, "http://127.0.0.1:8090/")
        with running_volantd(home, "--stop-vms-on-exit", env=daemon_env, netns=own.name) as second:
            with second.client(timeout=240) as api:
                adopted = api.get("/api/v1/vms/kept").json()
                assert adopted["status"] == "running" and adopted["pid"] == vm["pid"]
                assert adopted["ip_address"] == vm["ip_address"] == "192.168.127.2"
                assert run_in(api, "kept", "echo adopted")["stdout"] == "adopted\n"
                assert "Hello from a Volant microVM" in fetch(own, "http://127.0.0.1:8090/")
                assert api.delete("/api/v1/vms/kept").status_code == 204
            assert "vt-" not in own.run("ip", "-o", "link")
            assert "volantd" not in own.run("nft", "list", "tables")
