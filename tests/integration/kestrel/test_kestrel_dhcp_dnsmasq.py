"""kestrel's DHCP client against a real dnsmasq, configured as volantd configures it for the
``dhcp`` network mode (a reservation ``dhcp-host=MAC,IP`` on the bridge).

Two network namespaces made by the test, joined by a veth pair: dnsmasq serves
192.168.127.0/24 in one, kestrel's client asks in the other. No packet leaves them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.guest import wait_for
from support.netns import Namespace, namespaces_supported, netns, veth_pair

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(namespaces_supported() is not None, reason=str(namespaces_supported())),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq"),
]

DRIVER = Path(__file__).resolve().parent / "dhcp_driver.py"
SERVER, RESERVED = "192.168.127.1", "192.168.127.23"
MAC, UNKNOWN_MAC = "52:54:00:12:34:56", "52:54:00:65:43:21"


@dataclass(frozen=True)
class Link:
    """The two ends of the test network: dnsmasq's and the guest NIC's (no address)."""

    server: Namespace
    client: Namespace
    server_link: str
    client_link: str

    def set_client_mac(self, mac: str) -> None:
        self.client.run("ip", "link", "set", "dev", self.client_link, "down")
        self.client.run("ip", "link", "set", "dev", self.client_link, "address", mac)
        self.client.run("ip", "link", "set", "dev", self.client_link, "up")

    def kestrel(self, action: str, *options: str, mac: str = MAC) -> dict[str, Any]:
        """Run kestrel's client (dhcp_driver.py ``action``) in the client namespace."""
        output = self.client.run(
            sys.executable, str(DRIVER), action, "--interface", self.client_link,
            "--mac", mac, *options,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(output)
        return result


@pytest.fixture
def link() -> Iterator[Link]:
    with netns("dhcps") as server, netns("dhcpc") as client:
        server_link, client_link = veth_pair(server, f"{SERVER}/24", client, "192.168.127.99/24")
        client.run("ip", "address", "flush", "dev", client_link)  # the guest starts bare
        network = Link(server, client, server_link, client_link)
        network.set_client_mac(MAC)
        yield network


@contextlib.contextmanager
def running_dnsmasq(link: Link, directory: Path, *options: str) -> Iterator[Path]:
    """dnsmasq serving the link with ``options``; its lease file."""
    leases, log = directory / "dnsmasq.leases", directory / "dnsmasq.log"
    command = [
        "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--pid-file=",
        f"--interface={link.server_link}", "--bind-interfaces", "--log-dhcp",
        f"--dhcp-leasefile={leases}", f"--dhcp-option=option:router,{SERVER}",
        f"--dhcp-option=option:dns-server,{SERVER}", *options,
    ]  # fmt: skip
    with log.open("wb") as output:
        process = link.server.popen(command, stdout=output, stderr=subprocess.STDOUT)

    def listening() -> bool:  # on UDP port 67 (0x43), or dead
        return process.poll() is not None or ":0043 " in link.server.run("cat", "/proc/net/udp")

    try:
        wait_for(listening, 10, "dnsmasq to listen on port 67")
        assert process.poll() is None, log.read_text()
        yield leases
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def dnsmasq(link: Link, tmp_path: Path) -> Iterator[Path]:
    """A dynamic range with one-hour leases and a reservation for MAC."""
    with running_dnsmasq(
        link, tmp_path, "--dhcp-range=192.168.127.50,192.168.127.60,255.255.255.0,1h",
        f"--dhcp-host={MAC},{RESERVED}",
    ) as leases:  # fmt: skip
        yield leases


@pytest.fixture
def volantd_dnsmasq(link: Link, tmp_path: Path) -> Iterator[Path]:
    """As volantd runs it (volantd/network/dhcp.py): reservations only, leased for ever,
    authoritative, Rapid Commit, reservations in a hosts file."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{MAC},{RESERVED},vm1,infinite\n")
    with running_dnsmasq(
        link, tmp_path, "--dhcp-range=192.168.127.0,static,255.255.255.0,infinite",
        f"--dhcp-hostsfile={hosts}", "--dhcp-authoritative", "--dhcp-rapid-commit",
    ) as leases:  # fmt: skip
        yield leases


def client_addresses(link: Link) -> list[str]:
    shown = link.client.run("ip", "-4", "-o", "address", "show", "dev", link.client_link)
    return [line.split()[3] for line in shown.splitlines()]


def test_a_reserved_mac_gets_its_address_router_and_dns(link: Link, dnsmasq: Path) -> None:
    result = link.kestrel("obtain", "--hostname", "vm1")
    lease = result["lease"]
    assert {key: lease[key] for key in ("address", "prefix", "gateway", "dns", "server")} == {
        "address": RESERVED,
        "prefix": 24,
        "gateway": SERVER,
        "dns": [SERVER],
        "server": SERVER,
    }
    assert lease["lease_s"] == 3600
    assert 0 < lease["t1_s"] < lease["t2_s"] < 3600
    assert result["elapsed_s"] < 2
    # dnsmasq recorded the hostname (option 12) and the client identifier (option 61)
    (entry,) = dnsmasq.read_text().splitlines()
    assert entry.split()[1:] == [MAC, RESERVED, "vm1", "01:" + MAC]


def test_volantds_dnsmasq_answers_at_once_with_a_lease_for_ever(
    link: Link, volantd_dnsmasq: Path, tmp_path: Path
) -> None:
    report = link.kestrel("configure", "--resolv-conf", str(tmp_path / "resolv.conf"))
    assert report["ok"] is True, report["errors"]
    assert f"{link.client_link} DHCP lease {RESERVED}/24 from {SERVER} forever" in report["steps"]
    assert client_addresses(link) == [f"{RESERVED}/24"]
    assert "DHCPOFFER" not in (tmp_path / "dnsmasq.log").read_text()  # Rapid Commit: no OFFER
    result = link.kestrel("obtain")
    assert result["lease"]["lease_s"] == 0xFFFFFFFF


def test_dhcp_mode_configures_address_route_and_resolv_conf(
    link: Link, dnsmasq: Path, tmp_path: Path
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    report = link.kestrel("configure", "--hostname", "vm1", "--resolv-conf", str(resolv_conf))
    name = link.client_link
    assert report["ok"] is True, report["errors"]
    assert report["steps"] == [
        "lo up",
        f"{name} up",
        f"{name} DHCP lease {RESERVED}/24 from {SERVER} for 3600 s",
        f"{name} address {RESERVED}/24",
        f"default route via {SERVER}",
        f"{resolv_conf}: {SERVER}",
    ]
    assert client_addresses(link) == [f"{RESERVED}/24"]
    routes = link.client.run("ip", "-4", "route", "show", "default")
    assert routes.split() == ["default", "via", SERVER, "dev", name]
    assert resolv_conf.read_text() == f"nameserver {SERVER}\n"
    route = link.client.run("ip", "-4", "route", "get", SERVER).split()
    assert route[route.index("src") + 1] == RESERVED  # the guest talks to the host from it


def test_dns_servers_from_vm_json_win_over_the_leases(
    link: Link, dnsmasq: Path, tmp_path: Path
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    options = ("--resolv-conf", str(resolv_conf), "--dns", "9.9.9.9", "--dns", "1.1.1.1")
    report = link.kestrel("configure", *options)
    assert report["ok"] is True, report["errors"]
    assert resolv_conf.read_text() == "nameserver 9.9.9.9\nnameserver 1.1.1.1\n"


def test_a_mac_without_reservation_gets_an_address_from_the_range(
    link: Link, dnsmasq: Path
) -> None:
    link.set_client_mac(UNKNOWN_MAC)
    lease = link.kestrel("obtain", "--timeout", "15", mac=UNKNOWN_MAC)["lease"]
    last = int(lease["address"].rsplit(".", 1)[1])
    assert lease["address"].startswith("192.168.127.") and 50 <= last <= 60
    assert (lease["prefix"], lease["gateway"]) == (24, SERVER)


def test_renewing_and_rebinding_keep_the_address(link: Link, dnsmasq: Path) -> None:
    result = link.kestrel("renew", "--hostname", "vm1")
    first, renewed, rebound = result["lease"], result["renewed"], result["rebound"]
    for lease in (renewed, rebound):
        assert (lease["address"], lease["server"], lease["lease_s"]) == (RESERVED, SERVER, 3600)
        assert lease["obtained"] > first["obtained"]
    assert client_addresses(link) == [f"{RESERVED}/24"]
    assert len(dnsmasq.read_text().splitlines()) == 1


def test_without_a_server_the_error_says_what_was_not_heard(link: Link) -> None:
    started = time.monotonic()
    result = link.kestrel("obtain", "--timeout", "2")
    assert time.monotonic() - started < 6
    assert 2 <= result["elapsed_s"] < 3
    assert result["error"] == (
        f"{link.client_link}: no DHCP lease within 2 s: no server answered the DISCOVER with an"
        " OFFER (is a DHCP server, e.g. volantd's dnsmasq, serving this network?)"
    )


def test_without_a_server_dhcp_mode_reports_the_error_and_carries_on(
    link: Link, tmp_path: Path
) -> None:
    report = link.kestrel("configure", "--timeout", "1", "--resolv-conf", str(tmp_path / "r"))
    assert report["ok"] is False
    (error,) = report["errors"]
    assert error.startswith(f"{link.client_link}: no DHCP lease within 1 s")
    assert report["steps"] == ["lo up", f"{link.client_link} up"]
    assert client_addresses(link) == []
