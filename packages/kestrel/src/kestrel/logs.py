"""The workload's output: a bounded ring of timestamped lines, with followers.

Lines come from the workload's stdout/stderr pipes (never the console). The ring keeps the
newest ``max_lines`` lines and at most ``max_bytes`` of text; older lines are dropped and
counted. Followers wait for lines newer than the last sequence number they saw.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from .system import uptime_ms

MAX_LINE_BYTES = 16 * 1024
"""Longer lines are split; a line is also cut where the pipe closes."""


class LogLine(NamedTuple):
    """One line of workload output."""

    seq: int
    time_ns: int
    uptime_ms: int
    stream: str
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": format_time(self.time_ns),
            "uptime_ms": self.uptime_ms,
            "stream": self.stream,
            "line": self.text,
        }


def format_time(time_ns: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2025-01-31T12:00:00.123Z``."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1_000_000:03d}Z"


class LogBuffer:
    """The newest workload output lines, bounded by count and by size."""

    def __init__(self, max_lines: int = 10_000, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: deque[LogLine] = deque()
        self._bytes = 0
        self._next_seq = 1
        self.dropped = 0
        self._changed: asyncio.Event | None = None
        self.closed = False

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest line ever appended (0: none yet)."""
        return self._next_seq - 1

    def append(self, stream: str, text: str) -> LogLine:
        """Add one line (without its newline)."""
        line = LogLine(self._next_seq, time.time_ns(), uptime_ms(), stream, text)
        self._next_seq += 1
        self._lines.append(line)
        self._bytes += len(text)
        while len(self._lines) > self.max_lines or (
            self._bytes > self.max_bytes and len(self._lines) > 1
        ):
            self._bytes -= len(self._lines.popleft().text)
            self.dropped += 1
        self._wake()
        return line

    def tail(self, count: int | None = None, stream: str | None = None) -> list[LogLine]:
        """The last ``count`` lines (all kept lines when None), optionally of one stream."""
        lines = [ln for ln in self._lines if stream is None or ln.stream == stream]
        return lines if count is None else lines[max(0, len(lines) - count) :]

    def after(self, seq: int, stream: str | None = None) -> list[LogLine]:
        """Kept lines newer than ``seq``, optionally of one stream."""
        if not self._lines or self._lines[-1].seq <= seq:
            return []
        start = max(0, seq + 1 - self._lines[0].seq)
        kept = itertools.islice(self._lines, start, None)
        return [ln for ln in kept if stream is None or ln.stream == stream]

    async def wait_beyond(self, seq: int) -> bool:
        """Wait until a line newer than ``seq`` exists; False once the buffer is closed."""
        while self.last_seq <= seq:
            if self.closed:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
        return True

    def close(self) -> None:
        """Wake every follower for good (the agent is shutting down)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class LineSplitter:
    """Turns pipe bytes into lines for ``sink(stream, text)``; keeps partial lines."""

    def __init__(self, stream: str, sink: Callable[[str, str], object]) -> None:
        self.stream = stream
        self._sink = sink
        self._partial = b""

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self._emit(raw)
        while len(self._partial) > MAX_LINE_BYTES:
            self._emit(self._partial[:MAX_LINE_BYTES])
            self._partial = self._partial[MAX_LINE_BYTES:]

    def close(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, raw: bytes) -> None:
        while len(raw) > MAX_LINE_BYTES:
            self._sink(self.stream, raw[:MAX_LINE_BYTES].decode("utf-8", "replace"))
            raw = raw[MAX_LINE_BYTES:]
        self._sink(self.stream, raw.removesuffix(b"\r").decode("utf-8", "replace"))


class _PipeProtocol(asyncio.Protocol):
    def __init__(self, splitter: LineSplitter, done: asyncio.Future[None]) -> None:
        self._splitter = splitter
        self._done = done

    def data_received(self, data: bytes) -> None:
        self._splitter.feed(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._splitter.close()
        if not self._done.done():
            self._done.set_result(None)


async def collect_pipe(pipe: Any, stream: str, buffer: LogBuffer) -> asyncio.Future[None]:
    """Feed every line read from ``pipe`` into ``buffer`` tagged ``stream``, in the background.

    Returns a future that completes when the pipe reaches end of file (the writer closed it).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    splitter = LineSplitter(stream, buffer.append)
    await loop.connect_read_pipe(lambda: _PipeProtocol(splitter, done), pipe)
    return done
