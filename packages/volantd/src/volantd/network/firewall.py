"""Published ports of bridged VMs as nftables DNAT rules, in a table volantd owns.

The table `ip volantd` is rewritten whole, atomically (`nft -f`), from the rules of every
running bridged VM: adding or removing a VM never leaves a half-applied ruleset, and a
daemon start repairs whatever a crash left. `volar setup --bridge` owns a separate table
(`ip volant`: NAT for the subnet, forwarding); this one only publishes ports.

A published port answers on every host address, loopback included: locally generated
connections are translated in the output hook, and `route_localnet` on the bridge lets
127.0.0.1-sourced packets leave through it (then masqueraded), as Docker does.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from volantd.errors import VolantError

TABLE = "volantd"
SYSCTL_NET = Path("/proc/sys/net/ipv4/conf")


class FirewallError(VolantError):
    """The published-port rules could not be applied."""


@dataclass(frozen=True, order=True)
class Dnat:
    """Host port `host_port`/`protocol` forwarded to `address`:`port` of VM `vm`."""

    host_port: int
    protocol: str
    address: str
    port: int
    vm: str


def render_ruleset(rules: Iterable[Dnat], bridge: str, subnet: str) -> str:
    """The nft script that replaces table `ip volantd` with `rules` (none: no table at all)."""
    rules = sorted(rules)
    script = [f"table ip {TABLE}", f"delete table ip {TABLE}"]  # create-then-delete: idempotent
    if not rules:
        return "\n".join(script) + "\n"
    dnat = [
        f"        fib daddr type local {rule.protocol} dport {rule.host_port} "
        f'dnat to {rule.address}:{rule.port} comment "vm {rule.vm}"'
        for rule in rules
    ]
    network = ipaddress.IPv4Network(subnet)
    script += [
        f"table ip {TABLE} {{",
        "    chain prerouting {",
        "        type nat hook prerouting priority dstnat; policy accept;",
        *dnat,
        "    }",
        "    chain output {",
        "        type nat hook output priority -100; policy accept;",
        *dnat,
        "    }",
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
        f'        oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade',
        # A guest reaching another guest through a published port gets the reply from the
        # host, not straight over the bridge.
        f'        oifname "{bridge}" ip saddr {network} ct status dnat masquerade',
        "    }",
        "}",
    ]
    return "\n".join(script) + "\n"


def apply_ruleset(rules: Iterable[Dnat], bridge: str, subnet: str) -> None:
    """Make table `ip volantd` hold exactly `rules`."""
    rules = list(rules)
    nft = shutil.which("nft")
    if nft is None:
        if not rules:
            return  # nothing to publish, nothing to remove
        raise FirewallError(
            "publishing ports of bridged VMs needs nftables' `nft` (Debian package: nftables)"
        )
    if rules:
        allow_loopback_sources(bridge)
    done = subprocess.run(
        [nft, "-f", "-"], input=render_ruleset(rules, bridge, subnet),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise FirewallError(f"nft refused the published-port rules: {done.stderr.strip()}")


def list_ruleset() -> str:
    """Table `ip volantd` as nft prints it ('' when absent)."""
    nft = shutil.which("nft")
    if nft is None:
        return ""
    done = subprocess.run(
        [nft, "list", "table", "ip", TABLE], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else ""


def allow_loopback_sources(bridge: str) -> None:
    """Let packets from 127.0.0.1 that were translated to a guest leave through `bridge`."""
    path = SYSCTL_NET / bridge / "route_localnet"
    try:
        if path.read_text().strip() != "1":
            path.write_text("1\n")
    except OSError as error:
        raise FirewallError(f"cannot enable route_localnet on {bridge}: {error}") from None
