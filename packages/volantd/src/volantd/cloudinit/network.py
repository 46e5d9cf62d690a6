"""The network-config volantd writes when the user gives none: the VM's NIC, as cloud-init's
network configuration version 2 (the Netplan format).

The interface is matched by its MAC address and renamed to the name in ``vm.json`` (``eth0``),
so the configuration holds whatever name the guest's kernel gave the NIC. A static address
gets its prefix, a default route through the gateway (``to: 0.0.0.0/0``, which every
cloud-init release reads; ``to: default`` needs a recent one) and the name servers; a NIC
without an address (``dhcp`` mode) asks by DHCP.
"""

from __future__ import annotations

from pluginspec import GuestNetwork
from volantd.cloudinit.yamltext import scalar

DEFAULT_ROUTE = "0.0.0.0/0"


def network_config(network: GuestNetwork | None) -> str | None:
    """The network-config document for `network`; None when the VM has no NIC."""
    if network is None or network.mac is None:
        return None
    name = scalar(network.interface)
    lines = [
        "version: 2",
        "ethernets:",
        f"  {name}:",
        "    match:",
        f"      macaddress: {scalar(network.mac.lower())}",
        f"    set-name: {name}",
    ]
    if network.address is None:
        lines.append("    dhcp4: true")
    else:
        lines += ["    addresses:", f"      - {scalar(f'{network.address}/{network.prefix}')}"]
        if network.gateway is not None:
            lines += [
                "    routes:",
                f"      - to: {scalar(DEFAULT_ROUTE)}",
                f"        via: {scalar(network.gateway)}",
            ]
    if network.dns:
        lines += ["    nameservers:", "      addresses:"]
        lines += [f"        - {scalar(server)}" for server in network.dns]
    return "\n".join(lines) + "\n"
