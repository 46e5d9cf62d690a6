"""VM networking: network drivers per mode, host links (bridge, taps), IPAM wiring, published
ports (nftables DNAT) and the DHCP server of dhcp mode (docs/networking.md)."""

from volantd.network.drivers import (
    Attachment,
    BridgedNetwork,
    NetworkDriver,
    Networks,
    Published,
    UserNetwork,
    VsockNetwork,
)
from volantd.network.resolvers import host_resolvers

__all__ = [
    "Attachment",
    "BridgedNetwork",
    "NetworkDriver",
    "Networks",
    "Published",
    "UserNetwork",
    "VsockNetwork",
    "host_resolvers",
]
