"""Name servers to hand bridged guests when none are configured (VOLANT_DNS)."""

from __future__ import annotations

import ipaddress
from pathlib import Path


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """The host's own name servers, minus loopback ones (a guest cannot reach the host's
    127.0.0.53 stub)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return ()
    servers = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ipaddress.ip_address(fields[1].split("%")[0])
            except ValueError:
                continue
            if not address.is_loopback and address.version == 4:
                servers.append(str(address))
    return tuple(dict.fromkeys(servers))
