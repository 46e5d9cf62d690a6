"""What a workload's health is: the probe, and the first probe run before the event loop.

kestrel starts the workload before it imports asyncio and h11, which under software
emulation take most of a second. :class:`FirstHealthCheck` probes from a thread in that
time, so ``workload_healthy`` is printed as soon as the workload answers, however long the
agent's API still needs; the supervisor takes over when the event loop runs. This module
imports nothing the early boot has not loaded already (no asyncio, no HTTP library).

The deadline is the manifest's ``timeout_ms`` as given, counted from the workload's start
(upstream floored it at two minutes). Without a ``health_check`` an http workload is
healthy once ``base_url`` answers at all.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, NamedTuple

from .config import DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_TIMEOUT_MS, Workload
from .console import Console
from .origin import parse_http_url

PROBE_TIMEOUT_S = 2.0
"""Per-probe limit (connect + response head), so one stuck probe cannot eat the deadline."""
MAX_STATUS_LINE = 8192


class HealthProbe(NamedTuple):
    """What to probe, for how long and how often."""

    url: str
    timeout_ms: int
    interval_ms: int
    any_status: bool
    """True: any HTTP answer counts (no health_check configured); False: only 2xx."""

    def verdict(self, status: int) -> str | None:
        """None when ``status`` means healthy, else why not."""
        if self.any_status or 200 <= status < 300:
            return None
        return f"HTTP {status}"


def health_probe(workload: Workload) -> HealthProbe | None:
    """The probe of an http workload; None for process workloads."""
    if workload.type != "http" or not workload.base_url:
        return None
    check = workload.health_check
    if check is None:
        return HealthProbe(
            workload.base_url, DEFAULT_HEALTH_TIMEOUT_MS, DEFAULT_HEALTH_INTERVAL_MS, True
        )
    from urllib.parse import urljoin  # in the probing thread at boot, off the critical path

    url = urljoin(workload.base_url, check.endpoint)
    return HealthProbe(url, check.timeout_ms, check.interval_ms, False)


def probe_blocking(probe: HealthProbe, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """One GET with a plain socket; None when healthy, else why not.

    It reads only the status line, which is all a probe needs; the agent's own client
    (h11, :mod:`kestrel.health`) is not loaded yet when this runs.
    """
    try:
        origin = parse_http_url(probe.url)
    except ValueError:
        return f"cannot probe {probe.url}: only http:// URLs are supported"
    request = (
        f"GET {origin.path} HTTP/1.1\r\nHost: {origin.authority}\r\n"
        "User-Agent: kestrel-health\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", "replace")
    # A bytes host spares getaddrinfo the idna codec (tens of ms to load under emulation).
    host = origin.host.encode("ascii") if origin.host.isascii() else origin.host
    try:
        address = (host, origin.port)  # typeshed says str; CPython takes bytes as well
        with socket.create_connection(address, timeout=timeout_s) as conn:  # type: ignore[arg-type]
            conn.sendall(request)
            head = b""
            while b"\n" not in head and len(head) < MAX_STATUS_LINE:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as error:
        return f"cannot connect to {origin.url}: {error.strerror or error}"
    version, _, rest = head.split(b"\n", 1)[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        if not head:
            return "the upstream closed the connection without a response"
        return "the upstream sent invalid HTTP: no status line"
    return probe.verdict(int(code))


class FirstHealthCheck:
    """Probes the first run of the workload from a thread until the agent takes over.

    Emits ``workload_healthy`` itself when the workload answers first; :meth:`hand_over`
    stops it and tells the supervisor what it found.
    """

    def __init__(self, workload: Workload, console: Console, pid: int, started: float):
        self.workload = workload
        self.console = console
        self.pid = pid
        self.started = started
        """``time.monotonic()`` at the workload's start: the deadline counts from there."""
        self.healthy: dict[str, Any] | None = None
        """The ``workload_healthy`` event once emitted."""
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._handed_over = False

    def start(self) -> FirstHealthCheck:
        """Begin: a process workload is healthy now (it is running); an http one is probed."""
        if self.workload.type == "http" and self.workload.base_url:
            threading.Thread(target=self._run, name="first-health", daemon=True).start()
        else:
            self._report_healthy()
        return self

    def hand_over(self) -> tuple[dict[str, Any] | None, str | None]:
        """Stop probing; the ``workload_healthy`` event if it was emitted, else the last
        problem seen (None if no probe finished yet)."""
        with self._lock:
            self._handed_over = True
            return self.healthy, self.problem

    def _run(self) -> None:
        probe = health_probe(self.workload)
        assert probe is not None
        deadline = self.started + probe.timeout_ms / 1000
        interval = probe.interval_ms / 1000
        while not self._handed_over and time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            problem = probe_blocking(probe, max(0.05, min(PROBE_TIMEOUT_S, remaining)))
            if problem is None:
                self._report_healthy()
                return
            with self._lock:
                if self._handed_over:
                    return
                self.problem = problem
            time.sleep(interval)

    def _report_healthy(self) -> None:
        with self._lock:
            if self._handed_over:
                return
            self.problem = None
            self.healthy = self.console.event("workload_healthy", pid=self.pid, restarts=0)
