"""Starting the workload program (usable before the event loop runs).

kestrel starts the workload as early as it can, before importing its HTTP stack, so the
workload boots while the agent finishes starting; :mod:`kestrel.supervisor` takes it over
once the event loop runs.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import NamedTuple

from .config import Workload
from .console import Console
from .errors import KestrelError
from .processes import program_environment, spawn
from .system import uptime_ms
from .users import resolve_user


class StartResult(NamedTuple):
    """One attempt to start the workload: the process, or why there is none."""

    process: subprocess.Popen[bytes] | None
    error: str | None
    uptime_ms: int
    """Guest uptime at the start."""
    monotonic: float


def start_workload(
    workload: Workload,
    console: Console,
    *,
    passwd: str = "/etc/passwd",
    group: str = "/etc/group",
) -> StartResult:
    """Start ``workload`` with its output on pipes (reports only failures on the console)."""
    now, now_ms = time.monotonic(), uptime_ms()
    try:
        identity = None
        if workload.user is not None:
            identity = resolve_user(workload.user, passwd=passwd, group=group)
        _ensure_workdir(workload.workdir, console)
        process = spawn(
            workload.argv,
            env=program_environment(workload.env, identity),
            cwd=workload.workdir,
            identity=identity,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except KestrelError as error:
        console.log(f"workload: cannot start: {error}")
        return StartResult(None, str(error), now_ms, now)
    return StartResult(process, None, now_ms, now)


def _ensure_workdir(path: str, console: Console) -> None:
    """Create a missing working directory, as ``docker run`` does (owned by root, 0755)."""
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as error:
        raise KestrelError(f"working directory {path} is missing: {error.strerror}") from None
    console.log(f"workload: created the missing working directory {path}")


def announce_start(console: Console, started: StartResult, restarts: int) -> None:
    """Print ``workload_started`` (with the uptime of the start itself) if it started."""
    if started.process is not None:
        console.event(
            "workload_started", at_ms=started.uptime_ms, pid=started.process.pid, restarts=restarts
        )
