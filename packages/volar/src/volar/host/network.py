"""The host network of bridged VMs as `volar setup --bridge` wants it and finds it.

- :class:`NetworkSettings`: the bridge, its subnet and the host's address on it, from flags,
  else the ``VOLANT_*`` variables volantd reads, else volantd's defaults;
- :func:`network_facts`: what the host has now (links and their addresses, IPv4 forwarding,
  the NAT rules, which tools are on PATH), learnt from `ip`, `nft` and `iptables`;
- the NAT and forwarding rules: nftables table ``ip volant`` (:func:`nft_script`), or, where
  nft is missing, iptables rules (:func:`iptables_rules`) tagged ``--comment volant``.
  (volantd's published ports live in a table of their own, ``ip volantd``.)
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volar.client import VolarError
from volar.host.tools import run_tool

DEFAULT_BRIDGE = "vbr0"
DEFAULT_SUBNET = "192.168.127.0/24"
BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
NFT_TABLE = "volant"
RULE_COMMENT = "volant"
TOOLS = ("ip", "sysctl", "nft", "iptables")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
IPv4Interface = ipaddress.IPv4Interface


class InvalidSetting(VolarError):
    """A network setting (a flag or a ``VOLANT_*`` variable) volar cannot use."""


@dataclass(frozen=True)
class NetworkSettings:
    bridge: str
    subnet: ipaddress.IPv4Network
    host_ip: ipaddress.IPv4Address

    @property
    def host_interface(self) -> IPv4Interface:
        """The host's address with the subnet's prefix: ``192.168.127.1/24``."""
        return IPv4Interface(f"{self.host_ip}/{self.subnet.prefixlen}")

    def env(self) -> dict[str, str]:
        """The settings as the variables volantd reads."""
        return {
            "VOLANT_BRIDGE": self.bridge,
            "VOLANT_SUBNET": str(self.subnet),
            "VOLANT_HOST_IP": str(self.host_ip),
        }

    def flags(self) -> tuple[str, ...]:
        """The settings as `volar setup` flags."""
        return ("--bridge-name", self.bridge, "--subnet", str(self.subnet),
                "--host-ip", str(self.host_ip))  # fmt: skip


def network_settings(
    bridge: str | None = None,
    subnet: str | None = None,
    host_ip: str | None = None,
    env: Mapping[str, str] | None = None,
) -> NetworkSettings:
    """Each setting from its flag (not None), else its variable (not empty), else the default;
    :class:`InvalidSetting` names the flag or variable a bad value came from."""
    env = os.environ if env is None else env

    def pick(flag: str, value: str | None, variable: str) -> tuple[str | None, str]:
        if value is not None:
            return value, f"{flag} {value}"
        if env.get(variable):
            return env[variable], f"{variable}={env[variable]}"
        return None, ""

    name, name_source = pick("--bridge-name", bridge, "VOLANT_BRIDGE")
    name = DEFAULT_BRIDGE if name is None else name
    if not BRIDGE_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidSetting(
            f"{name_source or repr(name)}: a bridge name is 1 to 15 letters, digits, '_', '.' "
            "or '-'"
        )
    network_text, network_source = pick("--subnet", subnet, "VOLANT_SUBNET")
    network_source = network_source or f"the default subnet {DEFAULT_SUBNET}"
    try:
        network = ipaddress.IPv4Network(network_text or DEFAULT_SUBNET)
    except ValueError as error:
        raise InvalidSetting(
            f"{network_source}: not an IPv4 network like {DEFAULT_SUBNET} ({error})"
        ) from None
    if not 16 <= network.prefixlen <= 30:  # what volantd accepts
        raise InvalidSetting(f"{network_source}: must be between /16 and /30 in size")
    address_text, address_source = pick("--host-ip", host_ip, "VOLANT_HOST_IP")
    if address_text is None:
        return NetworkSettings(name, network, network.network_address + 1)
    try:
        address = ipaddress.IPv4Address(address_text)
    except ValueError:
        raise InvalidSetting(f"{address_source}: not an IPv4 address") from None
    first = network.network_address + 1
    if address not in network:
        raise InvalidSetting(
            f"{address_source}: not in the subnet ({network_source}); give a host address of "
            f"it, such as {first}"
        )
    if address in (network.network_address, network.broadcast_address):
        what = "network" if address == network.network_address else "broadcast"
        raise InvalidSetting(
            f"{address_source}: that is the subnet's {what} address, not a host address "
            f"(such as {first})"
        )
    return NetworkSettings(name, network, address)


# What the host has


@dataclass(frozen=True)
class Link:
    """A network link as `ip -d addr show` reports it."""

    name: str
    kind: str = ""  # "bridge", "veth", "tun", …; "" for a plain device
    up: bool = False  # administratively up
    master: str | None = None  # the bridge it is enslaved to
    addresses: tuple[IPv4Interface, ...] = ()


@dataclass(frozen=True, order=True)
class IptablesRule:
    """One iptables rule: `iptables -t TABLE -A CHAIN *rule`."""

    table: str
    chain: str
    rule: tuple[str, ...]

    def command(self, action: str) -> tuple[str, ...]:
        """The iptables command that checks (-C), appends (-A) or deletes (-D) the rule."""
        return ("iptables", "-w", "-t", self.table, action, self.chain, *self.rule)

    @property
    def summary(self) -> str:
        """``nat POSTROUTING -s 192.168.127.0/24 ! -o vbr0 -j MASQUERADE`` (no comment tag)."""
        args = " ".join(self.rule).replace(f" -m comment --comment {RULE_COMMENT}", "")
        return f"{self.table} {self.chain} {args}"

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "chain": self.chain, "rule": list(self.rule)}


@dataclass(frozen=True)
class NetworkFacts:
    """The host's network now; what :func:`volar.host.bridge.plan_bridge` plans from."""

    links: tuple[Link, ...] = ()
    ip_forward: str | None = "0"  # /proc/sys/net/ipv4/ip_forward (None: unreadable)
    tools: frozenset[str] = frozenset(TOOLS)  # which of TOOLS are on PATH
    nft_table: str | None = None  # `nft list table ip volant` (None: no such table)
    iptables_present: frozenset[IptablesRule] = frozenset()  # asked-about rules that exist

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def ports(self, bridge: str) -> list[str]:
        """The links enslaved to `bridge` (VM taps, mostly)."""
        return [link.name for link in self.links if link.master == bridge]


def parse_links(data: Sequence[Mapping[str, Any]]) -> tuple[Link, ...]:
    """Links from the JSON of `ip -j -d addr show`."""
    links = []
    for entry in data:
        addresses = tuple(
            IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            for info in entry.get("addr_info", ())
            if info.get("family") == "inet" and "local" in info
        )
        links.append(
            Link(
                name=str(entry["ifname"]),
                kind=str((entry.get("linkinfo") or {}).get("info_kind", "")),
                up="UP" in entry.get("flags", ()),
                master=entry.get("master"),
                addresses=addresses,
            )
        )
    return tuple(links)


def read_links(ip: str, env: Mapping[str, str] | None = None) -> tuple[Link, ...]:
    """Every link of this network namespace; OSError, SubprocessError or ValueError."""
    return parse_links(json.loads(run_tool([ip, "-j", "-d", "addr", "show"], env) or "[]"))


def read_ip_forward() -> str | None:
    try:
        return IP_FORWARD.read_text().strip()
    except OSError:
        return None


def network_facts(
    rules: Sequence[IptablesRule] = (),
    *,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> NetworkFacts:
    """Look at this host's network, changing nothing; `rules` are the iptables rules to ask
    about (`iptables -C`). Without root, nft and iptables cannot tell: their rules read as
    absent (and the steps that would add them need root anyway)."""
    found = {tool: shutil.which(tool, path=path) for tool in TOOLS}
    links: tuple[Link, ...] = ()
    if ip := found["ip"]:
        try:
            links = read_links(ip, env)
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            raise VolarError(f"cannot list the network links with `ip`: {error}") from None
    table = None
    if nft := found["nft"]:
        try:
            table = run_tool([nft, "list", "table", "ip", NFT_TABLE], env)
        except (OSError, subprocess.SubprocessError):
            table = None
    present: set[IptablesRule] = set()
    if iptables := found["iptables"]:
        for rule in rules:
            try:
                run_tool([iptables, *rule.command("-C")[1:]], env)
            except (OSError, subprocess.SubprocessError):
                continue
            present.add(rule)
    return NetworkFacts(
        links=links,
        ip_forward=read_ip_forward(),
        tools=frozenset(tool for tool, where in found.items() if where),
        nft_table=table,
        iptables_present=frozenset(present),
    )


# The rules


def nft_table(settings: NetworkSettings) -> str:
    """Table ``ip volant`` as `nft list table` prints it: NAT for the subnet's traffic leaving
    by another link, and forwarding to and from the bridge (replies, published ports)."""
    bridge = settings.bridge
    return "\n".join([
        f"table ip {NFT_TABLE} {{",
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
        f'        ip saddr {settings.subnet} oifname != "{bridge}" masquerade',
        "    }",
        "",
        "    chain forward {",
        "        type filter hook forward priority filter; policy accept;",
        f'        iifname "{bridge}" accept',
        f'        oifname "{bridge}" ct state established,related accept',
        f'        oifname "{bridge}" ct status dnat accept',
        "    }",
        "}",
        "",
    ])  # fmt: skip


def nft_script(settings: NetworkSettings) -> str:
    """What `nft -f -` applies, in one transaction: create the table if missing, delete it, and
    define it again, so applying it twice leaves the same table."""
    return f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n{nft_table(settings)}"


def nft_table_matches(listing: str | None, settings: NetworkSettings) -> bool:
    """Whether `nft list table ip volant` printed exactly the table setup wants."""

    def lines(text: str) -> list[str]:
        return [" ".join(line.split()) for line in text.splitlines() if line.strip()]

    return listing is not None and lines(listing) == lines(nft_table(settings))


def iptables_rules(settings: NetworkSettings) -> tuple[IptablesRule, ...]:
    """The iptables equivalent of table ``ip volant``, for hosts without nft."""
    bridge, tag = settings.bridge, ("-m", "comment", "--comment", RULE_COMMENT)
    return (
        IptablesRule("nat", "POSTROUTING",
                     ("-s", str(settings.subnet), "!", "-o", bridge, *tag, "-j", "MASQUERADE")),
        IptablesRule("filter", "FORWARD", ("-i", bridge, *tag, "-j", "ACCEPT")),
        IptablesRule("filter", "FORWARD", ("-o", bridge, "-m", "conntrack", "--ctstate",
                                           "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT")),
        IptablesRule("filter", "FORWARD",
                     ("-o", bridge, "-m", "conntrack", "--ctstate", "DNAT", *tag, "-j", "ACCEPT")),
    )  # fmt: skip
