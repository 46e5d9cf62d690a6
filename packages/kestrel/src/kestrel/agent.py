"""The running agent: event loop, reaper, supervisor, console shell and HTTP API together.

:mod:`kestrel.main` does the synchronous boot work (config, hostname, network, listening
sockets, first workload start) and then runs :meth:`Agent.run` until a shutdown request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any, NamedTuple

from . import __version__
from .api import API
from .config import VMConfig
from .console import Console
from .console_shell import ConsoleShell
from .healthcheck import FirstHealthCheck
from .httpserver import HTTPServer
from .logs import LogBuffer
from .netconfig import NetworkReport
from .reaper import Reaper
from .supervisor import HEALTHY, RUNNING, UNHEALTHY, Supervisor
from .workload import StartResult

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGPWR)


class BootState(NamedTuple):
    """What the synchronous boot phase did, handed to the agent."""

    started_ms: int
    """Guest uptime when kestrel's main() began."""
    init_started_ms: int | None
    """Guest uptime when the init started, if it said so (``VOLANT_INIT_STARTED_MS``)."""
    root_mounted_ms: int | None
    """rootfs strategy: guest uptime when stage 1 had switched to the root disk."""
    pid1: bool
    system: bool
    """Whether kestrel set up the machine (hostname, network) and powers it off."""
    network: NetworkReport | None
    hostname_error: str | None
    sockets: list[socket.socket]
    workload_start: StartResult | None
    first_health: FirstHealthCheck | None
    """The health check probing the first run until the supervisor takes over."""
    shell_device: str | None
    """Where to run the console shell (None: no shell)."""
    stop_timeout_s: float
    early_signal: Callable[[], str | None]
    """A shutdown signal that arrived before the event loop handled signals."""


class Agent:
    """Everything the API reports on and acts upon."""

    def __init__(self, config: VMConfig, console: Console, boot: BootState) -> None:
        self.config = config
        self.console = console
        self.boot = boot
        self.logs = LogBuffer()
        self.reaper = Reaper()
        self.supervisor = (
            Supervisor(config.workload, self.logs, console) if config.workload is not None else None
        )
        self.shell = ConsoleShell(boot.shell_device, console) if boot.shell_device else None
        console.shared_with_shell = self.shell is not None
        self.listen = [_address(sock) for sock in boot.sockets]
        self.ready_ms: int | None = None
        self.shutdown_reason: str | None = None
        self._shutdown: asyncio.Event | None = None

    async def run(self) -> str:
        """Serve until asked to shut down; then stop everything. Returns the reason."""
        loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        if self.supervisor is not None and self.boot.workload_start is not None:
            self.supervisor.adopt(self.boot.workload_start, self.reaper, self.boot.first_health)
        self.reaper.install()
        for number in SHUTDOWN_SIGNALS:
            loop.add_signal_handler(number, self.request_shutdown, f"signal {number.name}")
        early = self.boot.early_signal()
        if early is not None:
            self.request_shutdown(early)
        server = HTTPServer(API(self).handle, self.console.log)
        await server.start(self.boot.sockets)
        record = self.console.event("agent_ready", listen=self.listen, pid=os.getpid())
        self.ready_ms = record["uptime_ms"]
        tasks = []
        if self.supervisor is not None:
            tasks.append(self._guarded("workload supervisor", self.supervisor.run(self.reaper)))
        if self.shell is not None:
            tasks.append(self._guarded("console shell", self.shell.run(self.reaper)))
        await self._shutdown.wait()
        reason = self.shutdown_reason or "unknown"
        self.console.log(f"shutting down ({reason})")
        if self.supervisor is not None:
            await self.supervisor.stop(self.boot.stop_timeout_s)
        if self.shell is not None:
            await self.shell.stop()
        self.logs.close()
        await server.close()
        for task in tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, 5)
        for number in SHUTDOWN_SIGNALS:
            loop.remove_signal_handler(number)
        self.reaper.uninstall()
        self.console.event("shutdown", reason=reason)  # the last event: power-off follows
        return reason

    def _guarded(self, what: str, job: Any) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await job
            except Exception as error:  # report, keep serving: the API helps diagnose it
                self.console.log(f"{what} failed: {error!r}")

        return asyncio.ensure_future(guarded())

    def request_shutdown(self, reason: str) -> None:
        """Begin the shutdown sequence (idempotent)."""
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
        if self._shutdown is not None:
            self._shutdown.set()

    def workload_running(self) -> bool:
        return self.supervisor is not None and self.supervisor.state in (
            RUNNING,
            HEALTHY,
            UNHEALTHY,
        )

    def workload_state(self) -> str:
        return self.supervisor.state if self.supervisor is not None else "none"

    def info(self) -> dict[str, Any]:
        """The ``GET /v1/info`` document."""
        config, boot, supervisor = self.config, self.boot, self.supervisor
        network: dict[str, Any] | None = None
        if boot.network is not None:
            network = {
                "mode": config.network.mode,
                "mac": config.network.mac,
                "address": config.network.address,
                "prefix": config.network.prefix,
                "gateway": config.network.gateway,
                "dns": list(config.network.dns),
                **boot.network.as_dict(),
            }
        return {
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "pid1": boot.pid1,
                "system": boot.system,
                "listen": self.listen,
                "orphans_reaped": self.reaper.orphans_reaped,
            },
            "vm": {"name": config.vm_name, "id": config.vm_id},
            "hostname": socket.gethostname(),
            "hostname_configured": config.hostname,
            "hostname_error": boot.hostname_error,
            "workload": supervisor.info() if supervisor is not None else None,
            "network": network,
            "console_shell": self.shell.info() if self.shell is not None else None,
            "boot": {
                "boot_epoch_ns": config.boot_epoch_ns,
                "init_started_ms": boot.init_started_ms,
                "root_mounted_ms": boot.root_mounted_ms,
                "agent_started_ms": boot.started_ms,
                "agent_ready_ms": self.ready_ms,
                "workload_started_ms": supervisor.first_started_ms if supervisor else None,
                "workload_healthy_ms": supervisor.first_healthy_ms if supervisor else None,
            },
            "events": self.console.events,
            "logs": {"last_seq": self.logs.last_seq, "dropped": self.logs.dropped},
        }


def _address(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    return f"vsock:{name[1]}" if isinstance(name, tuple) else str(name)
