"""The host side of bridged networking without guests: taps on a real bridge, the
published-port ruleset in real nftables, dnsmasq for dhcp mode, and what a daemon start
repairs. Each test runs inside a network namespace it makes (`entered`), so the host's own
network is never touched.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pluginspec import Expose
from support.netns import Namespace, entered, namespaces_supported, netns
from volantd.network.dhcp import DhcpServer, Reservation
from volantd.network.drivers import STATE_FILE, BridgedNetwork, lease_host_port
from volantd.network.firewall import Dnat, apply_ruleset, list_ruleset, render_ruleset
from volantd.network.links import LinkError, create_tap, delete_tap, tap_name, volant_taps
from volantd.network.resolvers import host_resolvers
from volantd.settings import Settings, SettingsError
from volantd.store import ConflictError, Database, PluginRecord, VMRecord, open_database

pytestmark = pytest.mark.skipif(
    namespaces_supported() is not None, reason=str(namespaces_supported())
)
GATEWAY = ipaddress.IPv4Interface("192.168.127.1/24")


@pytest.fixture
def inside() -> Iterator[Namespace]:
    """A fresh namespace with bridge vbr0 (192.168.127.1/24, up) that this test runs in."""
    with netns("vtest") as namespace, entered(namespace):
        for command in (
            ["ip", "link", "add", "vbr0", "type", "bridge"],
            ["ip", "address", "add", str(GATEWAY), "dev", "vbr0"],
            ["ip", "link", "set", "vbr0", "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        yield namespace


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "volant.db")
    database.plugins.add(
        PluginRecord(name="p", version="1.0.0", runtime="r",
                     manifest={"name": "p", "version": "1.0.0", "runtime": "r"})
    )  # fmt: skip
    yield database
    database.close()


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def vm(db: Database, name: str, tmp_path: Path) -> VMRecord:
    record = VMRecord(
        name=name, plugin="p", runtime="r", status="pending", cpu_cores=1, memory_mb=128,
        mac_address=f"52:54:00:00:00:{len(name):02x}", network_mode="bridged",
        hypervisor="qemu", run_dir=tmp_path / name,
    )  # fmt: skip
    record.run_dir.mkdir(parents=True, exist_ok=True)
    return db.vms.create(record, {"plugin": "p"})


def test_tap_names_are_stable_distinct_and_fit_the_kernel_limit() -> None:
    assert tap_name("web-1") == tap_name("web-1") != tap_name("web1")  # upstream: both vttap-web1
    assert all(len(tap_name(name)) <= 15 for name in ("a", "x" * 63))


def test_a_tap_joins_the_bridge_and_a_stale_one_is_replaced(inside: Namespace) -> None:
    tap = tap_name("web-1")
    create_tap(tap, "vbr0")
    create_tap(tap, "vbr0")  # left behind by a crash: replaced, not an error
    shown = subprocess.run(["ip", "-d", "link", "show", tap], capture_output=True, text=True)
    assert "master vbr0" in shown.stdout and "tap" in shown.stdout and ",UP" in shown.stdout
    assert volant_taps() == [tap]
    assert delete_tap(tap) and not delete_tap(tap)
    assert tap not in links()


def test_a_missing_bridge_is_named_with_the_fix(inside: Namespace) -> None:
    with pytest.raises(LinkError, match=r"bridge nobr does not exist: .*volar setup --bridge"):
        create_tap(tap_name("web-1"), "nobr")
    assert "vt-" not in links()


def test_published_ports_become_one_table_rewritten_whole(inside: Namespace) -> None:
    rules = [
        Dnat(8080, "tcp", "192.168.127.2", 80, "web-1"),
        Dnat(5353, "udp", "192.168.127.3", 53, "dns-1"),
    ]
    apply_ruleset(rules, "vbr0", "192.168.127.0/24")
    table = list_ruleset()
    assert "tcp dport 8080 dnat to 192.168.127.2:80" in table
    assert "udp dport 5353 dnat to 192.168.127.3:53" in table
    assert table.count("dnat to") == 4  # prerouting (other hosts) and output (this host)
    assert 'comment "vm web-1"' in table
    route_localnet = Path("/proc/sys/net/ipv4/conf/vbr0/route_localnet").read_text().strip()
    assert route_localnet == "1"  # 127.0.0.1 may be translated to a guest
    apply_ruleset(rules[:1], "vbr0", "192.168.127.0/24")
    assert "5353" not in list_ruleset() and "8080" in list_ruleset()
    apply_ruleset([], "vbr0", "192.168.127.0/24")
    assert list_ruleset() == ""
    apply_ruleset([], "vbr0", "192.168.127.0/24")  # nothing to remove: still fine


def test_the_ruleset_of_no_rules_only_removes_the_table() -> None:
    assert render_ruleset([], "vbr0", "192.168.127.0/24") == (
        "table ip volantd\ndelete table ip volantd\n"
    )


def test_dnsmasq_runs_only_while_dhcp_vms_are_reserved(inside: Namespace, tmp_path: Path) -> None:
    server = DhcpServer("vbr0", GATEWAY, ["192.168.127.1"], tmp_path / "dhcp")
    server.reserve("web-1", Reservation("52:54:00:aa:bb:01", "192.168.127.5", "web-1"))
    server.reserve("web-2", Reservation("52:54:00:aa:bb:02", "192.168.127.6", "web-2"))
    try:
        assert server.running
        command = server.command()
        assert "--dhcp-host=52:54:00:aa:bb:01,192.168.127.5,web-1,infinite" in command
        assert "--dhcp-host=52:54:00:aa:bb:02,192.168.127.6,web-2,infinite" in command
        assert "--port=0" in command and "--interface=vbr0" in command  # no DNS, bridge only
        assert "--dhcp-range=192.168.127.0,static,255.255.255.0,infinite" in command
        server.release("web-1")
        assert server.running and "web-1" not in " ".join(server.command())
    finally:
        server.release("web-2")
    assert not server.running and not server.pid_file.exists()


def test_a_dnsmasq_left_by_a_killed_volantd_is_ended(inside: Namespace, tmp_path: Path) -> None:
    first = DhcpServer("vbr0", GATEWAY, [], tmp_path / "dhcp")
    first.reserve("web-1", Reservation("52:54:00:aa:bb:01", "192.168.127.5", "web-1"))
    leftover = first._process
    assert leftover is not None
    first._process = None  # as if its volantd died without stopping it
    second = DhcpServer("vbr0", GATEWAY, [], tmp_path / "dhcp")
    try:
        second.reserve("web-1", Reservation("52:54:00:aa:bb:01", "192.168.127.5", "web-1"))
        assert leftover.wait(5) is not None  # it held the DHCP port: ended first
        assert second.running
    finally:
        second.close()
        if leftover.poll() is None:
            leftover.kill()


def test_a_daemon_start_removes_what_dead_vms_left_and_keeps_the_running(
    inside: Namespace, db: Database, tmp_path: Path
) -> None:
    network = BridgedNetwork(
        db, bridge="vbr0", gateway=GATEWAY, dns=[], state_dir=tmp_path / "state"
    )
    alive, dead = vm(db, "alive", tmp_path), vm(db, "dead", tmp_path)
    exposes = [Expose(name="http", port=80)]
    for record in (alive, dead):
        attached = network.attach(record, "bridged", exposes, 8080)
        assert attached.address is not None and attached.guest.gateway == "192.168.127.1"
    assert len(volant_taps()) == 2 and list_ruleset().count("dnat to") == 4
    restarted = BridgedNetwork(
        db, bridge="vbr0", gateway=GATEWAY, dns=[], state_dir=tmp_path / "state"
    )
    restarted.reconcile({"alive": alive})
    assert volant_taps() == [tap_name("alive")]
    table = list_ruleset()
    assert "vm alive" in table and "vm dead" not in table
    saved = json.loads((alive.run_dir / STATE_FILE).read_text())
    assert saved["address"] == "192.168.127.2" and saved["tap"] == tap_name("alive")
    restarted.detach(alive)
    assert volant_taps() == [] and list_ruleset() == ""
    assert not (alive.run_dir / STATE_FILE).exists()
    assert db.ips.leases("alive")[0].address == "192.168.127.2"  # kept until the VM is deleted


def test_a_changed_subnet_gives_new_addresses_and_drops_the_old_pool(
    db: Database, tmp_path: Path
) -> None:
    BridgedNetwork(db, bridge="vbr0", gateway=GATEWAY, dns=[], state_dir=tmp_path)
    smaller = ipaddress.IPv4Interface("10.9.0.1/29")
    BridgedNetwork(db, bridge="vbr0", gateway=smaller, dns=[], state_dir=tmp_path)
    leased = [db.ips.lease("vbr0", f"vm-{n}") for n in range(5)]
    assert leased == [f"10.9.0.{host}" for host in range(2, 7)]
    with pytest.raises(ConflictError, match="no free addresses"):
        db.ips.lease("vbr0", "vm-6")


def test_a_wanted_host_port_names_the_vm_holding_it(db: Database) -> None:
    assert lease_host_port(db, "web-1", "expose:http", 18080) == 18080
    assert lease_host_port(db, "web-1", "expose:http", 18080) == 18080  # again: same port
    with pytest.raises(ConflictError, match=r"host port 18080 \(expose:http\) .* vm 'web-1'"):
        lease_host_port(db, "web-2", "expose:http", 18080)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        with pytest.raises(ConflictError, match=r"in use by another program"):
            lease_host_port(db, "web-2", "expose:http", busy)
    assert db.ports.leases("web-2") == []


def test_bridge_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_environment()
    assert str(settings.bridge_network) == "192.168.127.1/24"
    custom = Settings.from_environment(subnet="10.20.0.0/16", host_ip="10.20.0.254")
    assert str(custom.bridge_network) == "10.20.0.254/16"
    for bad, match in (
        ({"bridge": "a-bridge-name-too-long"}, "VOLANT_BRIDGE"),
        ({"subnet": "10.0.0.0/33"}, "VOLANT_SUBNET"),
        ({"subnet": "10.0.0.0/8"}, "between /16 and /30"),
        ({"host_ip": "10.0.0.1"}, "VOLANT_HOST_IP"),
        ({"host_ip": "192.168.127.255"}, "host address"),
    ):
        with pytest.raises(SettingsError, match=match):
            Settings.from_environment(**bad)
    monkeypatch.setenv("VOLANT_DNS", "192.168.127.1, 9.9.9.9")
    assert Settings.from_environment().dns == ("192.168.127.1", "9.9.9.9")
    monkeypatch.setenv("VOLANT_DNS", "not-an-ip")
    with pytest.raises(SettingsError, match="VOLANT_DNS"):
        Settings.from_environment()


def test_guests_get_the_hosts_resolvers_but_not_loopback_ones(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nnameserver 10.1.2.3\nsearch x\nnameserver ::1\n")
    assert host_resolvers(resolv) == ("10.1.2.3",)
    assert host_resolvers(tmp_path / "missing") == ()
