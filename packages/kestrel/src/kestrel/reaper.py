"""The one place that calls ``waitpid``: reaps every child and hands statuses to their owners.

As PID 1 kestrel inherits every orphan in the guest and must reap them all, but the
workload's and exec'd commands' exit statuses belong to the code that started them. The
reaper calls ``waitpid(-1, WNOHANG)`` on every SIGCHLD (delivered through the event loop)
and resolves the future registered for that pid; statuses of unknown pids (orphans) are
counted and dropped. Nothing else in kestrel may wait for a child (no ``Popen.wait``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess


class Reaper:
    """Collects exit statuses of all children; ``watch(process)`` gives one as a future."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[asyncio.Future[int], subprocess.Popen[bytes] | None]] = {}
        self.orphans_reaped = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Start reaping on SIGCHLD in the running loop (and reap what exited before)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def uninstall(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_signal_handler(signal.SIGCHLD)
        self._loop = None

    def watch(self, process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
        """A future resolved with ``process``'s exit code (negative: killed by that signal).

        Call it right after starting the process, before the next ``await``. Children started
        before the loop ran (the workload starts while the agent still imports its HTTP stack)
        must be watched before :meth:`install`, which reaps whatever already exited.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[process.pid] = (future, process)
        return future

    def reap(self) -> None:
        """Collect every exited child now (called on SIGCHLD)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            waiting = self._waiting.pop(pid, None)
            if waiting is not None:
                self._resolve(waiting[0], waiting[1], status)
            else:
                self.orphans_reaped += 1

    @staticmethod
    def _resolve(
        future: asyncio.Future[int], process: subprocess.Popen[bytes] | None, status: int
    ) -> None:
        code = os.waitstatus_to_exitcode(status)
        if process is not None:
            process.returncode = code  # so Popen never waits for it itself
        if not future.done():
            future.set_result(code)
