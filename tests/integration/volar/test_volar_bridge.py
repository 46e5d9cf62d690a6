"""The real `volar setup --bridge-only` / `--teardown`, as root, inside network namespaces the
tests make: the bridge, its address, forwarding (per namespace) and NAT are real, and the
host's own network is never touched. `--bridge-only` plans the network steps alone, so no
package, kernel or unit step runs; `--bridge --dry-run` shows the whole plan.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.netns import Namespace, namespaces_supported, netns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(namespaces_supported() is not None, reason=str(namespaces_supported())),
    pytest.mark.skipif(
        shutil.which("nft") is None, reason="nft is missing (apt-get install nftables)"
    ),
]

VOLAR = Path(sys.executable).parent / "volar"
SUBNET = "10.213.0.0/24"
MASQUERADE = f'ip saddr {SUBNET} oifname != "vbr0" masquerade'


def volar(
    ns: Namespace, home: Path, *args: str, path: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """volar in `ns`, with VOLANT_HOME `home`, no VOLANT_* from outside and `env` added."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOLANT_")}
    base.update(VOLANT_HOME=str(home), **env)
    if path is not None:
        base["PATH"] = path
    return subprocess.run(
        ns.command(str(VOLAR), *args), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env=base,
    )  # fmt: skip


def link(ns: Namespace, name: str) -> dict | None:
    links = json.loads(ns.run("ip", "-j", "-d", "addr", "show"))
    return next((entry for entry in links if entry["ifname"] == name), None)


def addresses(entry: dict) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for a in entry["addr_info"] if a["family"] == "inet"]


def ip_forward(ns: Namespace) -> str:
    return ns.run("cat", "/proc/sys/net/ipv4/ip_forward").strip()


def nft_table(ns: Namespace) -> str | None:
    listed = subprocess.run(ns.command("nft", "list", "table", "ip", "volant"),
                            capture_output=True, text=True)  # fmt: skip
    return listed.stdout if listed.returncode == 0 else None


def state(ns: Namespace) -> tuple[object, ...]:
    """What setup may change in `ns`: links, IPv4 addresses, forwarding, and the ruleset with
    nft's handles (a table applied again has new ones)."""
    links = ns.run("ip", "-o", "link", "show")
    ruleset = ns.run("nft", "-a", "list", "ruleset")
    return links, ns.run("ip", "-4", "-o", "addr", "show"), ip_forward(ns), ruleset


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_setup_then_again_then_teardown(home: Path) -> None:
    record = home / "host-setup.json"
    with netns() as ns:
        before = state(ns)
        preview = volar(ns, home, "setup", "--bridge-only", "--subnet", SUBNET, "--dry-run")
        assert preview.returncode == 0, preview.stderr
        assert "ip link add vbr0 type bridge" in preview.stdout.splitlines()
        assert MASQUERADE in preview.stdout
        assert state(ns) == before and not home.exists()

        first = volar(ns, home, "setup", "--bridge-only", "--subnet", SUBNET, "-y")
        assert first.returncode == 0, first.stderr
        assert "Setup complete." in first.stdout
        bridge = link(ns, "vbr0")
        assert bridge is not None and bridge["linkinfo"]["info_kind"] == "bridge"
        assert "UP" in bridge["flags"] and addresses(bridge) == ["10.213.0.1/24"]
        assert MASQUERADE in (nft_table(ns) or "")
        assert ip_forward(ns) == "1"
        recorded = json.loads(record.read_text())
        assert recorded["bridges_created"] == ["vbr0"] and recorded["ip_forward_before"] == "0"
        assert recorded["nft_table"] == "ip volant"

        after = state(ns)
        again = volar(ns, home, "setup", "--bridge-only", "--subnet", SUBNET, "-y")
        assert again.returncode == 0, again.stderr
        assert "Nothing to do: this host is set up." in again.stdout
        assert "+ " not in again.stdout
        assert state(ns) == after and json.loads(record.read_text()) == recorded

        torn = volar(ns, home, "setup", "--teardown", "-y")
        assert torn.returncode == 0, torn.stderr
        assert "Teardown complete." in torn.stdout
        assert link(ns, "vbr0") is None and nft_table(ns) is None
        assert ip_forward(ns) == "0" and not record.exists()

        nothing = volar(ns, home, "setup", "--teardown", "-y")
        assert nothing.returncode == 0, nothing.stderr
        assert "Nothing to tear down" in nothing.stdout


def test_settings_come_from_the_environment_volantd_reads(home: Path) -> None:
    with netns() as ns:
        env = {"VOLANT_BRIDGE": "br-test", "VOLANT_SUBNET": "10.214.0.0/16",
               "VOLANT_HOST_IP": "10.214.3.4"}  # fmt: skip
        result = volar(ns, home, "setup", "--bridge-only", "-y", **env)
        assert result.returncode == 0, result.stderr
        bridge = link(ns, "br-test")
        assert bridge is not None and addresses(bridge) == ["10.214.3.4/16"]
        assert 'ip saddr 10.214.0.0/16 oifname != "br-test" masquerade' in (nft_table(ns) or "")


def test_teardown_keeps_a_bridge_that_was_there(home: Path) -> None:
    with netns() as ns:
        ns.run("ip", "link", "add", "vbr0", "type", "bridge")
        ns.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        result = volar(ns, home, "setup", "--bridge-only", "--subnet", SUBNET, "-y")
        assert result.returncode == 0, result.stderr
        assert "ip link add" not in result.stdout
        torn = volar(ns, home, "setup", "--teardown", "-y")
        assert torn.returncode == 0, torn.stderr
        assert "skipped: bridge vbr0: was there before volar setup: kept" in torn.stdout
        bridge = link(ns, "vbr0")
        assert bridge is not None and addresses(bridge) == []
        assert nft_table(ns) is None
        assert ip_forward(ns) == "1"  # it was on before setup


def test_iptables_when_nft_is_missing(home: Path, tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("ip", "iptables", "sysctl"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"this host has no {tool}")
        (tools / tool).symlink_to(found)
    masquerade = f"-A POSTROUTING -s {SUBNET} ! -o vbr0 -m comment --comment volant -j MASQUERADE"
    with netns() as ns:
        result = volar(ns, home, "setup", "--bridge-only", "--subnet", SUBNET, "-y",
                       path=str(tools))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert masquerade in ns.run("iptables", "-t", "nat", "-S").splitlines()
        forward = ns.run("iptables", "-S", "FORWARD")
        assert "-A FORWARD -i vbr0 -m comment --comment volant -j ACCEPT" in forward
        assert nft_table(ns) is None
        again = volar(ns, home, "setup", "--bridge-only", "--subnet", SUBNET, "-y",
                      path=str(tools))  # fmt: skip
        assert again.returncode == 0 and "Nothing to do" in again.stdout, again.stderr
        assert ns.run("iptables", "-t", "nat", "-S").count("--comment volant") == 1
        torn = volar(ns, home, "setup", "--teardown", "-y", path=str(tools))
        assert torn.returncode == 0, torn.stderr
        assert "volant" not in ns.run("iptables", "-t", "nat", "-S")
        assert "volant" not in ns.run("iptables", "-S")
        assert link(ns, "vbr0") is None


def test_a_subnet_already_in_use_is_refused(home: Path) -> None:
    with netns() as ns:
        ns.run("ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
        ns.run("ip", "addr", "add", "10.213.0.77/24", "dev", "uplink0")
        before = state(ns)
        result = volar(ns, home, "setup", "--bridge-only", "--subnet", SUBNET, "-y")
        assert result.returncode == 1
        assert "uplink0 already has 10.213.0.77/24, in the subnet 10.213.0.0/24" in result.stderr
        assert state(ns) == before and not home.exists()


def test_bad_settings_are_usage_errors(home: Path) -> None:
    with netns() as ns:
        for args, message in (
            (("--host-ip", "10.0.0.1"), "--host-ip 10.0.0.1: not in the subnet (--subnet"),
            (("--bridge-name", "much-too-long-name"), "--bridge-name much-too-long-name:"),
            (("--subnet", "10.213.0.1/24"), "has host bits set"),
        ):
            result = volar(ns, home, "setup", "--bridge", "--subnet", SUBNET, *args)
            assert result.returncode == 2 and message in result.stderr, result.stderr
        unasked = volar(ns, home, "setup", "--subnet", SUBNET, "--dry-run")
        assert unasked.returncode == 2 and "add --bridge" in unasked.stderr


def test_full_setup_dry_run_shows_the_network_and_the_unit(home: Path, tmp_path: Path) -> None:
    unit = tmp_path / "units" / "volantd.service"
    with netns() as ns:
        before = state(ns)
        result = volar(ns, home, "setup", "--bridge", "--systemd", "--unit-file", str(unit),
                       "--subnet", SUBNET, "--dry-run")  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert "ip addr replace 10.213.0.1/24 dev vbr0" in lines
        assert f"cat > {unit} <<'EOF'" in lines
        assert "Environment=VOLANT_SUBNET=10.213.0.0/24" in lines
        assert (
            f"ExecStartPre={VOLAR} setup --bridge-only --yes --bridge-name vbr0 "
            f"--subnet {SUBNET} --host-ip 10.213.0.1"
        ) in lines
        assert state(ns) == before and not unit.exists() and not home.exists()
