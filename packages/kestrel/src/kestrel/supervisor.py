"""Supervising the workload: start it, collect its output, health-check it, restart it.

States (``GET /v1/info`` → ``workload.state``):

- ``starting``: not running yet (first start, or waiting out the restart backoff);
- ``running``: running, health not established yet (http workloads being probed);
- ``healthy``: running and healthy (process workloads: healthy while running);
- ``unhealthy``: running, but the health check timed out (probing goes on, slower);
- ``exited``: exited and not restarted (policy ``never``, success under ``on-failure``,
  or ``max_restarts`` reached);
- ``stopped``: stopped by kestrel (shutdown).

The workload runs in its own session; when its main process ends, whatever is left of its
process group is killed, so a restart never runs next to leftovers of the previous run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

from .config import Workload
from .console import Console
from .health import probe_once, wait_healthy
from .healthcheck import FirstHealthCheck, health_probe
from .logs import LogBuffer, collect_pipe
from .processes import end_process_group, exit_description, signal_group, signal_name
from .system import uptime_ms
from .workload import StartResult, announce_start, start_workload

if TYPE_CHECKING:
    from .reaper import Reaper

STARTING = "starting"
RUNNING = "running"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
EXITED = "exited"
STOPPED = "stopped"

SPAWN_FAILURE_EXIT_CODE = 127
"""What a workload that could not be started counts as, for the restart policy."""
BACKOFF_RESET_S = 10.0
"""A run at least this long ends a crash loop: the next restart waits the initial backoff."""
UNHEALTHY_REPROBE_S = 1.0


class Supervisor:
    """Owns the workload process for the agent's whole life."""

    def __init__(
        self,
        workload: Workload,
        logs: LogBuffer,
        console: Console,
        *,
        passwd: str = "/etc/passwd",
        group: str = "/etc/group",
    ) -> None:
        self.workload = workload
        self.logs = logs
        self.console = console
        self._passwd = passwd
        self._group = group
        self.state = STARTING
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.health_problem: str | None = None
        self.first_started_ms: int | None = None
        self.first_healthy_ms: int | None = None
        self._next_restart_at: float | None = None
        self._started_at = 0.0
        self._exit: asyncio.Future[int] | None = None
        self._needs_start = True
        self._first_health: FirstHealthCheck | None = None
        self._first_healthy: dict[str, Any] | None = None
        self._stopping = False
        self._stop_requested: asyncio.Event | None = None
        self._probe = health_probe(workload)

    # -- starting ---------------------------------------------------------------------------

    def adopt(
        self, started: StartResult, reaper: Reaper, first_health: FirstHealthCheck | None
    ) -> None:
        """Take over a start made (and announced) before the loop ran, with the health check
        probing it meanwhile; call before ``reaper.install()``."""
        self._take(started, reaper)
        self._first_health = first_health

    def _start(self, reaper: Reaper) -> None:
        started = start_workload(
            self.workload, self.console, passwd=self._passwd, group=self._group
        )
        self._take(started, reaper)
        announce_start(self.console, started, self.restarts)

    def _take(self, started: StartResult, reaper: Reaper) -> None:
        self._needs_start = False
        self.health_problem = None
        self.process = started.process
        self.last_error = started.error
        self._started_at = started.monotonic
        self._exit = reaper.watch(started.process) if started.process is not None else None
        if started.process is not None:
            self.state = RUNNING
            if self.first_started_ms is None:
                self.first_started_ms = started.uptime_ms

    # -- supervising ------------------------------------------------------------------------

    async def run(self, reaper: Reaper) -> None:
        """Supervise until the workload is stopped or the restart policy gives up."""
        self._stop_requested = asyncio.Event()
        if self._first_health is not None:
            self._first_healthy, self.health_problem = self._first_health.hand_over()
            if self._first_healthy is not None:
                self.state = HEALTHY
                self.first_healthy_ms = self._first_healthy["uptime_ms"]
            self._first_health = None
        crash_loop = 0
        while True:
            if self._needs_start:
                if self._stopping:
                    self.state = STOPPED
                    return
                self._start(reaper)
            exit_code = await self._supervise_one()
            if self._stopping:
                self.state = STOPPED
                return
            if not self.workload.restart.wants_restart(exit_code, self.restarts):
                self.state = EXITED
                return
            if time.monotonic() - self._started_at >= BACKOFF_RESET_S:
                crash_loop = 0
            delay = self.workload.restart.delay_ms(crash_loop) / 1000
            crash_loop += 1
            self.state = STARTING
            self._next_restart_at = time.monotonic() + delay
            self.console.log(f"workload: restarting in {delay * 1000:.0f} ms")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)
            self._next_restart_at = None
            if self._stopping:
                self.state = STOPPED
                return
            self.restarts += 1
            self._needs_start = True

    async def _supervise_one(self) -> int:
        """Follow one run to its end; its exit code (spawn failures count as 127)."""
        process, exit_future = self.process, self._exit
        if process is None or exit_future is None:
            self._report_exit(None, SPAWN_FAILURE_EXIT_CODE)
            return SPAWN_FAILURE_EXIT_CODE
        if process.stdout is not None:
            await collect_pipe(process.stdout, "stdout", self.logs)
        if process.stderr is not None:
            await collect_pipe(process.stderr, "stderr", self.logs)
        health = asyncio.ensure_future(self._follow_health(process))
        try:
            exit_code = await exit_future
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
        signal_group(process, signal.SIGKILL)
        self._report_exit(process, exit_code)
        return exit_code

    async def _follow_health(self, process: subprocess.Popen[bytes]) -> None:
        if self._first_healthy is not None:  # found (and announced) before the loop ran
            self._first_healthy = None
            return
        probe = self._probe
        if probe is None:
            self._became_healthy(process)
            return
        self.health_problem = await wait_healthy(probe, since=self._started_at)
        while self.health_problem is not None:
            if self.state != UNHEALTHY:
                self.state = UNHEALTHY
                self.console.event(
                    "workload_unhealthy", pid=process.pid, reason=self.health_problem
                )
            await asyncio.sleep(UNHEALTHY_REPROBE_S)
            self.health_problem = await probe_once(probe)
        self._became_healthy(process)

    def _became_healthy(self, process: subprocess.Popen[bytes]) -> None:
        self.state = HEALTHY
        self.health_problem = None
        record = self.console.event("workload_healthy", pid=process.pid, restarts=self.restarts)
        if self.first_healthy_ms is None:
            self.first_healthy_ms = record["uptime_ms"]

    def _report_exit(self, process: subprocess.Popen[bytes] | None, exit_code: int) -> None:
        restarting = not self._stopping and self.workload.restart.wants_restart(
            exit_code, self.restarts
        )
        self.last_exit = {
            "pid": process.pid if process is not None else None,
            "exit_code": exit_code,
            "signal": signal_name(-exit_code) if exit_code < 0 else None,
            "description": exit_description(exit_code)
            if process is not None
            else f"not started: {self.last_error}",
            "uptime_ms": uptime_ms(),
        }
        fields: dict[str, Any] = {
            "pid": self.last_exit["pid"],
            "exit_code": self.last_exit["exit_code"],
            "signal": self.last_exit["signal"],
            "restarts": self.restarts,
            "will_restart": restarting,
        }
        if process is None:
            fields["error"] = self.last_error
        self.console.event("workload_exited", **fields)
        self.console.log(f"workload: {self.last_exit['description']}")

    # -- stopping ---------------------------------------------------------------------------

    async def stop(self, timeout_s: float) -> None:
        """No more restarts; the workload's stop signal (SIGTERM unless ``stop_signal`` says
        otherwise) to its group, SIGKILL after ``timeout_s``."""
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        process, exit_future = self.process, self._exit
        if process is None or exit_future is None or exit_future.done():
            return
        stop_signal = self.workload.stop_signal
        await end_process_group(
            process, exit_future, (stop_signal,), grace_s=timeout_s, kill_wait_s=5,
            before_kill=lambda: self.console.log(
                f"workload: still running {timeout_s:g} s after {signal_name(stop_signal)}: "
                "SIGKILL"
            ),
        )  # fmt: skip

    # -- reporting --------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The workload part of ``GET /v1/info``."""
        running = self.process is not None and self.process.returncode is None
        next_restart = None
        if self._next_restart_at is not None:
            next_restart = max(0, int((self._next_restart_at - time.monotonic()) * 1000))
        return {
            "type": self.workload.type,
            "argv": self.workload.argv,
            "state": self.state,
            "pid": self.process.pid if running and self.process is not None else None,
            "restarts": self.restarts,
            "restart_policy": self.workload.restart.policy,
            "next_restart_in_ms": next_restart,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "health": None
            if self._probe is None
            else {"url": self._probe.url, "problem": self.health_problem},
        }
