"""The host links of bridged networking, over netlink (pyroute2): the bridge volantd attaches
VMs to and one tap device per VM.

Tap names are derived from the VM's name, so a VM always gets the same tap and two VMs
never share one (upstream's `vttap-<alnum>` let `web-1` and `web1` collide and delete each
other's taps). The tap keeps a MAC of its own: the guest's MAC belongs to the guest's NIC.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from volantd.errors import VolantError

TAP_PREFIX = "vt-"
"""Every tap volantd makes is named `vt-` + 12 hex digits (15 characters, the kernel's limit)."""


class LinkError(VolantError):
    """A host link could not be found, made or removed."""


@dataclass(frozen=True)
class BridgeState:
    name: str
    exists: bool
    up: bool = False
    addresses: tuple[str, ...] = ()


def tap_name(vm_name: str) -> str:
    """The tap device of VM `vm_name`: `vt-` + the first 12 hex digits of its name's SHA-256."""
    return TAP_PREFIX + hashlib.sha256(vm_name.encode()).hexdigest()[:12]


def bridge_state(bridge: str) -> BridgeState:
    """Whether `bridge` exists, is up, and its IPv4 addresses (CIDR)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return BridgeState(bridge, exists=False)
        (link,) = ipr.get_links(found[0])
        addresses = tuple(
            f"{address.get_attr('IFA_ADDRESS')}/{address['prefixlen']}"
            for address in ipr.get_addr(index=found[0], family=2)
        )
        return BridgeState(bridge, True, bool(link["flags"] & 1), addresses)


def create_tap(name: str, bridge: str) -> None:
    """Make tap `name` (a stale one of that name, left by a crash, is replaced), enslave it to
    `bridge` and bring it up."""
    with IPRoute() as ipr:
        bridges = ipr.link_lookup(ifname=bridge)
        if not bridges:
            raise LinkError(
                f"bridge {bridge} does not exist: create it with `volar setup --bridge` "
                "(or point VOLANT_BRIDGE at an existing bridge)"
            )
        _delete(ipr, name)
        try:
            ipr.link("add", ifname=name, kind="tuntap", mode="tap",
                     ifr={"no_pi": True, "vnet_hdr": True})  # fmt: skip
            (index,) = ipr.link_lookup(ifname=name)
            ipr.link("set", index=index, master=bridges[0], state="up")
        except NetlinkError as error:
            _delete(ipr, name)
            raise LinkError(f"could not create tap {name} on bridge {bridge}: {error}") from None


def delete_tap(name: str) -> bool:
    """Remove tap `name`; false when it did not exist."""
    with IPRoute() as ipr:
        return _delete(ipr, name)


def volant_taps() -> list[str]:
    """Every tap device on this host (namespace) that volantd named."""
    with IPRoute() as ipr:
        names = (link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
        return sorted(name for name in names if name and name.startswith(TAP_PREFIX))


def _delete(ipr: IPRoute, name: str) -> bool:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as error:
        if error.code != 19:  # ENODEV: gone meanwhile
            raise LinkError(f"could not remove tap {name}: {error}") from None
    return True
