"""Loopback ports for a VM's forwards (agent and ``expose`` entries), never handed out twice.

The store's lease table is the authority between VMs; a port is also offered only if it can
be bound on 127.0.0.1 right now, so one another program holds is skipped.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

PORT_RANGE = range(20000, 30000)
"""Below Linux's ephemeral range (32768-60999 by default), where every outgoing connection
takes a port at random: a port leased there could be taken between the lease and the VMM
binding it (seen in CI as QEMU's "Could not set up host forwarding rule")."""


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def candidate_ports(port_range: range = PORT_RANGE) -> Iterator[int]:
    """Ports of ``port_range`` in random order that can be bound at the moment."""
    ports = list(port_range)
    random.shuffle(ports)
    return (port for port in ports if bindable(port))
