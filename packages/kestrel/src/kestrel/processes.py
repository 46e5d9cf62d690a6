"""Starting programs: the clean environment, user switch and the errors people can act on.

Every child gets its own session (and so its own process group), so kestrel can signal the
whole group. Exit statuses are collected by :mod:`kestrel.reaper`, never by ``Popen.wait``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import SpawnError
from .users import Identity

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def program_environment(extra: Mapping[str, str], identity: Identity | None) -> dict[str, str]:
    """The environment of a workload or exec'd command: a clean base plus ``extra``.

    kestrel's own environment (``PYTHONHOME`` of the agent's interpreter, the kernel's init
    variables) is deliberately not inherited.
    """
    if identity is not None:
        home = identity.home
    else:
        home = "/root" if os.getuid() == 0 else os.environ.get("HOME", "/")
    env = {"PATH": DEFAULT_PATH, "HOME": home}
    if identity is not None and identity.name:
        env["USER"] = env["LOGNAME"] = identity.name
    env.update(extra)
    return env


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str = "/",
    identity: Identity | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.DEVNULL,
    stderr: Any = subprocess.DEVNULL,
    preexec_fn: Any = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session; raise :class:`SpawnError` with a readable reason."""
    if not argv:
        raise SpawnError("nothing to run: the command is empty")
    options: dict[str, Any] = {}
    if identity is not None:
        options.update(user=identity.uid, group=identity.gid, extra_groups=list(identity.groups))
    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            preexec_fn=preexec_fn,
            **options,
        )
    except FileNotFoundError as error:
        if error.filename == cwd:
            raise SpawnError(f"working directory {cwd} does not exist") from None
        raise SpawnError(f"program {argv[0]!r} not found (PATH={env.get('PATH', '')})") from None
    except NotADirectoryError:
        raise SpawnError(f"working directory {cwd} is not a directory") from None
    except PermissionError as error:
        what = f"working directory {cwd}" if error.filename == cwd else f"program {argv[0]!r}"
        raise SpawnError(f"{what}: permission denied") from None
    except OSError as error:
        raise SpawnError(f"cannot start {argv[0]!r}: {error.strerror or error}") from None
    except (ValueError, subprocess.SubprocessError) as error:
        raise SpawnError(f"cannot start {argv[0]!r}: {error}") from None


def signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
    """Send ``signal_number`` to the process group that ``process`` leads (if still there)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal_number)


async def end_process_group(
    process: subprocess.Popen[bytes],
    exited: Any,
    signals: Sequence[int],
    grace_s: float,
    kill_wait_s: float,
    before_kill: Callable[[], None] | None = None,
) -> None:
    """Send ``signals`` to ``process``'s group; SIGKILL it (after calling ``before_kill``) if
    ``exited``, an asyncio future the reaper resolves, is not done within ``grace_s``."""
    import asyncio
    import signal

    for signal_number in signals:
        signal_group(process, signal_number)
    try:
        await asyncio.wait_for(asyncio.shield(exited), grace_s)
    except TimeoutError:
        if before_kill is not None:
            before_kill()
        signal_group(process, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), kill_wait_s)


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15."""
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_description(exit_code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` for a Popen-style code (negative: signal)."""
    return f"exit code {exit_code}" if exit_code >= 0 else f"killed by {signal_name(-exit_code)}"
