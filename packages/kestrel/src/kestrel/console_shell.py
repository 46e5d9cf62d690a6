"""A shell on the serial console for whoever is attached to it (vm.json ``console_shell``).

The shell is a session leader with the console as its controlling terminal, so job
control and Ctrl-C work; it is started again (after a short, growing pause) whenever it
exits. The workload never writes to the console, so its output cannot garble the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

from .console import Console
from .errors import KestrelError
from .processes import end_process_group, program_environment, spawn

if TYPE_CHECKING:
    from .reaper import Reaper

DEFAULT_SHELL = "/bin/sh"
RESPAWN_INITIAL_S = 0.5
RESPAWN_MAX_S = 10.0


def _take_controlling_tty() -> None:  # runs in the child, between fork and exec
    import fcntl
    import termios

    with contextlib.suppress(OSError):  # not a terminal (a log file in tests): no job control
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def terminal_behind(device: str) -> str:
    """The real terminal behind ``/dev/console`` (e.g. ``/dev/ttyS0``), else ``device``.

    Like busybox's cttyhack: a shell gets job control on the real serial device; the
    kernel lists the device ``/dev/console`` writes to last in ``console/active``.
    """
    if device != "/dev/console":
        return device
    try:
        with open("/sys/class/tty/console/active") as file:
            names = file.read().split()
    except OSError:
        return device
    if names and os.path.exists(f"/dev/{names[-1]}"):
        return f"/dev/{names[-1]}"
    return device


class ConsoleShell:
    """Keeps ``shell`` running on the terminal at ``device``."""

    def __init__(self, device: str, console: Console, shell: str = DEFAULT_SHELL) -> None:
        self.device = terminal_behind(device)
        self.shell = shell
        self.console = console
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self.starts = 0
        self._exit: asyncio.Future[int] | None = None
        self._stopping = False
        self._stop_requested: asyncio.Event | None = None

    def start(self) -> bool:
        """Start the shell now; False (and :attr:`error` set) when it cannot run."""
        self.process = None
        if not os.access(self.shell, os.X_OK):
            self.error = f"{self.shell} does not exist or is not executable: no console shell"
            return False
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as error:
            self.error = f"cannot open {self.device}: {error.strerror or error}"
            return False
        try:
            self.process = spawn(
                [self.shell],
                env=program_environment({"TERM": "linux"}, None),
                cwd="/",
                stdin=fd,
                stdout=fd,
                stderr=fd,
                preexec_fn=_take_controlling_tty,
            )
        except KestrelError as error:
            self.error = str(error)
            return False
        finally:
            os.close(fd)
        self.error = None
        self.starts += 1
        return True

    def adopt(self, reaper: Reaper) -> None:
        """Register a shell started before the loop ran; call before ``reaper.install()``."""
        if self.process is not None:
            self._exit = reaper.watch(self.process)

    async def run(self, reaper: Reaper) -> None:
        """Start the shell again whenever it exits, until :meth:`stop`."""
        self._stop_requested = asyncio.Event()
        pause = RESPAWN_INITIAL_S
        while not self._stopping:
            if self._exit is None:
                if self.start() and self.process is not None:
                    self._exit = reaper.watch(self.process)
                else:
                    self.console.log(f"console shell: {self.error}")
                    if not os.access(self.shell, os.X_OK):
                        return
            if self._exit is not None:
                started = time.monotonic()
                await self._until_stopped_or(self._exit)
                if self._stopping:
                    return
                self._exit = None
                if time.monotonic() - started > RESPAWN_MAX_S:
                    pause = RESPAWN_INITIAL_S
            pausing = asyncio.ensure_future(asyncio.sleep(pause))
            try:
                await self._until_stopped_or(pausing)
            finally:
                pausing.cancel()
            pause = min(pause * 2, RESPAWN_MAX_S)

    async def _until_stopped_or(self, other: asyncio.Future[Any]) -> None:
        assert self._stop_requested is not None
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({other, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def stop(self) -> None:
        """End the shell (SIGHUP, then SIGKILL) and do not start it again."""
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        process, exit_future = self.process, self._exit
        if process is None or exit_future is None or exit_future.done():
            return
        await end_process_group(
            process, exit_future, (signal.SIGHUP, signal.SIGCONT), grace_s=2, kill_wait_s=2
        )

    def info(self) -> dict[str, Any]:
        running = self.process is not None and self.process.returncode is None
        return {
            "device": self.device,
            "shell": self.shell,
            "pid": self.process.pid if running and self.process is not None else None,
            "starts": self.starts,
            "error": self.error,
        }
