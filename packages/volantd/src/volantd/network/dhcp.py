"""The DHCP server of `dhcp`-mode VMs: a dnsmasq volantd runs on the bridge while such VMs run.

Each VM still gets its address from volantd's IPAM; dnsmasq only hands out reserved
addresses (`static` range, `--dhcp-host` options), one per MAC, leased for ever, so it needs
no lease file. The reservations are on its command line rather than in a hosts file: dnsmasq
reads files after dropping root, and volantd's home is private; a change restarts it, which
costs nothing with leases that never end. So volantd always knows where a
guest's agent is (upstream's dhcp mode lost track of its guests), and two servers never
disagree. dnsmasq's DNS side is off (`--port=0`); it stops with volantd (a restarted volantd
starts it again for the VMs it adopts, after ending one a killed volantd left behind).
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from volantd.errors import VolantError
from volantd.hosttools import require_tool


class DhcpError(VolantError):
    """The DHCP server could not be started."""


@dataclass(frozen=True)
class Reservation:
    mac: str
    address: str
    hostname: str


class DhcpServer:
    """dnsmasq on `bridge`, serving the reservations of running dhcp-mode VMs."""

    def __init__(
        self, bridge: str, gateway: ipaddress.IPv4Interface, dns: Sequence[str], state_dir: Path
    ) -> None:
        self.bridge = bridge
        self.gateway = gateway
        self.dns = tuple(dns)
        self.state_dir = state_dir
        self._reservations: dict[str, Reservation] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def log_file(self) -> Path:
        return self.state_dir / "dnsmasq.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def reserve(self, vm: str, reservation: Reservation) -> None:
        """Serve `reservation` to VM `vm` (starting dnsmasq for the first one)."""
        with self._lock:
            if self.running and self._reservations.get(vm) == reservation:
                return
            self._reservations[vm] = reservation
            self._stop()
            self._start()

    def release(self, vm: str) -> None:
        """Stop serving VM `vm`; dnsmasq stops with the last reservation."""
        with self._lock:
            if self._reservations.pop(vm, None) is None:
                return
            self._stop()
            if self._reservations:
                self._start()

    def close(self) -> None:
        with self._lock:
            self._reservations.clear()
            self._stop()

    def command(self) -> list[str]:
        """dnsmasq's command line."""
        network = self.gateway.network
        options = [
            "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--pid-file",
            f"--interface={self.bridge}", "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={network.network_address},static,{network.netmask},infinite",
            "--leasefile-ro", "--dhcp-authoritative", "--dhcp-rapid-commit",
            f"--dhcp-option=option:router,{self.gateway.ip}",
            f"--log-facility={self.log_file}", "--log-dhcp",
        ]  # fmt: skip
        if self.dns:
            options.append(f"--dhcp-option=option:dns-server,{','.join(self.dns)}")
        for item in sorted(self._reservations.values(), key=lambda item: item.mac):
            options.append(f"--dhcp-host={item.mac},{item.address},{item.hostname},infinite")
        return [require_tool("dnsmasq", "the DHCP server of dhcp-mode VMs"), *options]

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "dnsmasq.pid"

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._end_leftover()
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            process.wait(timeout=0.3)  # a bad option or a taken port ends it at once
        except subprocess.TimeoutExpired:
            self._process = process
            self.pid_file.write_text(f"{process.pid}\n")
            return
        raise DhcpError(
            f"dnsmasq on {self.bridge} exited at once ({process.returncode}); see {self.log_file}"
        )

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        self.pid_file.unlink(missing_ok=True)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _end_leftover(self) -> None:
        """End the dnsmasq of a volantd that was killed: it holds the DHCP port."""
        try:
            pid = int(self.pid_file.read_text())
            process = psutil.Process(pid)
            if f"--log-facility={self.log_file}" in process.cmdline():
                process.terminate()
                process.wait(5)
        except (OSError, ValueError, psutil.Error):
            pass
        self.pid_file.unlink(missing_ok=True)
