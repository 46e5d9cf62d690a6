"""Running a command for ``POST /v1/exec``: collected, or streamed as it runs.

The command runs in its own session with a clean environment (as the workload does), its
output on pipes. On timeout, or when a streaming client goes away, its whole process group
is killed. Background processes that keep the output pipes open are not waited for longer
than :data:`OUTPUT_GRACE_S` after the command itself exits.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple

from .processes import program_environment, signal_group, signal_name, spawn
from .reaper import Reaper
from .users import resolve_user

OUTPUT_GRACE_S = 1.0
MAX_COLLECTED_OUTPUT = 16 * 1024 * 1024
"""Per stream, for the non-streaming form; more is read and dropped (``*_truncated``)."""


class ExecSpec(NamedTuple):
    """A checked ``POST /v1/exec`` request."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    timeout_s: float | None
    stdin: bytes | None
    user: str | None


class ExecRequestError(ValueError):
    """The request body does not describe a command; the message names the field."""


def parse_exec_request(data: Any) -> ExecSpec:
    """Check a decoded JSON body: ``cmd`` (list, or a string run by ``/bin/sh -c``), ``env``,
    ``cwd``, ``timeout_s``, ``stdin``, ``user``."""
    if not isinstance(data, dict):
        raise ExecRequestError("request body must be a JSON object")
    unknown = set(data) - {"cmd", "env", "cwd", "timeout_s", "stdin", "user"}
    if unknown:
        raise ExecRequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    cmd = data.get("cmd")
    if isinstance(cmd, str) and cmd.strip():
        argv = ["/bin/sh", "-c", cmd]
    elif isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd) and cmd[0]:
        argv = list(cmd)
    else:
        raise ExecRequestError("cmd: must be a non-empty list of strings (or a shell command)")
    if any("\x00" in a for a in argv):
        raise ExecRequestError("cmd: must not contain NUL characters")
    env = data.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in env.items()
    ):
        raise ExecRequestError("env: must be an object of NAME: string")
    cwd = data.get("cwd") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ExecRequestError("cwd: must be an absolute path")
    timeout = data.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ExecRequestError("timeout_s: must be a positive number of seconds")
    stdin = data.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise ExecRequestError("stdin: must be a string")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise ExecRequestError("user: must be 'user', 'uid', 'user:group' or 'uid:gid'")
    return ExecSpec(
        argv=argv,
        env=dict(env),
        cwd=cwd,
        timeout_s=float(timeout) if timeout is not None else None,
        stdin=stdin.encode() if stdin is not None else None,
        user=user,
    )


class Output(NamedTuple):
    """A piece of the command's output."""

    stream: str
    data: bytes


class ExecResult(NamedTuple):
    """How the command ended."""

    exit_code: int
    """Negative: killed by that signal (Python's convention)."""
    timed_out: bool
    duration_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "signal": signal_name(-self.exit_code) if self.exit_code < 0 else None,
            "timed_out": self.timed_out,
            "duration_ms": self.duration_ms,
        }


class _QueueProtocol(asyncio.Protocol):
    def __init__(self, stream: str, queue: asyncio.Queue[tuple[str, bytes | None]]) -> None:
        self.stream = stream
        self.queue = queue

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait((self.stream, data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait((self.stream, None))


def _protocol_factory(
    stream: str, queue: asyncio.Queue[tuple[str, bytes | None]]
) -> Callable[[], _QueueProtocol]:
    return lambda: _QueueProtocol(stream, queue)


class CommandRun:
    """A started command; iterate :meth:`output` for its output and then its result."""

    def __init__(
        self,
        spec: ExecSpec,
        reaper: Reaper,
        *,
        passwd: str = "/etc/passwd",
        group: str = "/etc/group",
    ) -> None:
        identity = resolve_user(spec.user, passwd=passwd, group=group) if spec.user else None
        self.spec = spec
        self.started = time.monotonic()
        self.process = spawn(
            spec.argv,
            env=program_environment(spec.env, identity),
            cwd=spec.cwd,
            identity=identity,
            stdin=subprocess.PIPE if spec.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.exit = reaper.watch(self.process)

    async def output(self) -> AsyncGenerator[Output | ExecResult, None]:
        """Output pieces as they come, then one :class:`ExecResult`. Closing the iterator
        early kills the command's process group."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()
        self.exit.add_done_callback(lambda _: queue.put_nowait(("exit", None)))
        transports: list[asyncio.BaseTransport] = []
        pump = self._pump(queue)
        try:
            for name, pipe in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
                reader, _ = await loop.connect_read_pipe(_protocol_factory(name, queue), pipe)
                transports.append(reader)
            if self.spec.stdin is not None:
                stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, self.process.stdin)
                transports.append(stdin)
                stdin.write(self.spec.stdin)
                stdin.close()
            async for item in pump:
                yield item
        finally:
            await pump.aclose()
            if not self.exit.done():
                signal_group(self.process, signal.SIGKILL)
            for transport in transports:
                transport.close()

    async def _pump(
        self, queue: asyncio.Queue[tuple[str, bytes | None]]
    ) -> AsyncGenerator[Output | ExecResult, None]:
        timeout = self.spec.timeout_s
        deadline = self.started + timeout if timeout is not None else None
        open_streams, exited, timed_out = 2, False, False
        while open_streams or not exited:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                stream, data = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                if exited:
                    break  # grace period over: background processes hold the pipes
                timed_out, deadline = True, None
                signal_group(self.process, signal.SIGKILL)
                continue
            if stream == "exit":
                exited, deadline = True, time.monotonic() + OUTPUT_GRACE_S
            elif data is None:
                open_streams -= 1
            else:
                yield Output(stream, data)
        duration = int((time.monotonic() - self.started) * 1000)
        yield ExecResult(self.exit.result(), timed_out, duration)


async def collect(run: CommandRun) -> dict[str, Any]:
    """Run to the end; the ``POST /v1/exec`` response body."""
    buffers: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    sizes = {"stdout": 0, "stderr": 0}
    truncated = {"stdout": False, "stderr": False}
    result: ExecResult | None = None
    async for item in run.output():
        if isinstance(item, ExecResult):
            result = item
            continue
        room = MAX_COLLECTED_OUTPUT - sizes[item.stream]
        if len(item.data) > room:
            truncated[item.stream] = True
        if room > 0:
            buffers[item.stream].append(item.data[:room])
            sizes[item.stream] += min(room, len(item.data))
    assert result is not None
    body: dict[str, Any] = result.as_dict()
    for stream in ("stdout", "stderr"):
        body[stream] = b"".join(buffers[stream]).decode("utf-8", "replace")
        body[f"{stream}_truncated"] = truncated[stream]
    return body


async def stream_lines(
    run: CommandRun, encode: Callable[[dict[str, Any]], bytes]
) -> AsyncIterator[bytes]:
    """The streaming form: one JSON line per output piece, then one with the result."""
    decoders: Mapping[str, Any] = {
        name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")
    }
    iterator = run.output()
    try:
        async for item in iterator:
            if isinstance(item, ExecResult):
                for name, decoder in decoders.items():
                    rest = decoder.decode(b"", final=True)
                    if rest:
                        yield encode({"stream": name, "data": rest})
                yield encode(item.as_dict())
            else:
                text = decoders[item.stream].decode(item.data)
                if text:
                    yield encode({"stream": item.stream, "data": text})
    finally:
        with contextlib.suppress(Exception):
            await iterator.aclose()
