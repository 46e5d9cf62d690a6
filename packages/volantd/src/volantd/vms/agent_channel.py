"""The agent channels of VMs without a NIC: a loopback port per VM forwarded to kestrel's
vsock port (`volantd.network.vsock`), so the VM's `agent_url` works like any other.

What a VM's channel is (CID, the VMM's socket, the guest port) is kept in its run directory,
so a restarted volantd opens the same channel for a VM it adopts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from volantd.network.vsock import (
    AgentForwarder,
    Connector,
    connect_af_vsock,
    connect_hybrid_vsock,
)

log = logging.getLogger("volantd.vms")
CHANNEL_FILE = "agent-channel.json"


@dataclass(frozen=True)
class VsockChannel:
    """Guest vsock `port` of the VM with context id `cid`, through the VMM's unix socket
    `socket` when `hybrid` (Cloud Hypervisor), else over AF_VSOCK (QEMU vhost-vsock)."""

    cid: int
    socket: str
    port: int
    hybrid: bool

    def connector(self) -> Connector:
        if self.hybrid:
            return lambda: connect_hybrid_vsock(Path(self.socket), self.port)
        return lambda: connect_af_vsock(self.cid, self.port)

    def save(self, run_dir: Path) -> None:
        (run_dir / CHANNEL_FILE).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> VsockChannel | None:
        try:
            return cls(**json.loads((run_dir / CHANNEL_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


class AgentChannels:
    """The forwarders of this volantd's NIC-less VMs, by VM name."""

    def __init__(self) -> None:
        self._forwarders: dict[str, AgentForwarder] = {}

    async def open(self, name: str, channel: VsockChannel, port: int = 0) -> int:
        """Forward a loopback port (`port`, else any free one) to `channel`; returns it."""
        await self.close(name)
        forwarder = AgentForwarder(channel.connector())
        try:
            bound = await forwarder.start(port)
        except OSError:
            if not port:
                raise
            log.warning("vm %s: agent port %d is taken; forwarding another", name, port)
            bound = await forwarder.start()
        self._forwarders[name] = forwarder
        return bound

    async def close(self, name: str) -> None:
        forwarder = self._forwarders.pop(name, None)
        if forwarder is not None:
            await forwarder.close()

    async def close_all(self) -> None:
        for name in list(self._forwarders):
            await self.close(name)
