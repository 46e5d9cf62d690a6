"""A VM's serial console over volantd's WebSocket, from any machine that can reach the API.

``GET /ws/v1/vms/{name}/console`` carries the guest's output as binary frames and takes input
from any frame; the API key travels as ``Authorization: Bearer`` on the upgrade request, over
TCP (``ws://``, ``wss://``) or volantd's unix socket alike.

Two ways to run:

* **stdin is a terminal**: the terminal goes into raw mode, so every key (Ctrl-C, Ctrl-Z, the
  arrows) reaches the guest, until the detach key (Ctrl-] by default, like telnet) is pressed.
  The terminal is restored on every way out: detach, the console closing, an error, SIGTERM
  or SIGHUP.
* **stdin is not a terminal** (a pipe, a file): it is copied to the console until it ends,
  then output keeps being printed until the console has been quiet for ``linger`` seconds
  (so ``echo uname -a | volar vms console web-1`` prints the answer). No detach key here.

Nothing here knows about Typer: :func:`attach` returns an :class:`Outcome` and the command
turns it into messages and an exit status.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import signal
import termios
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect, unix_connect

from volar.client import VolarError

DEFAULT_ESCAPE = "^]"
READ_SIZE = 4096


class EscapeError(ValueError):
    """A ``--escape`` value that names no key."""


def _ctrl(char: str) -> int:
    upper = char.upper()
    if upper == "?":
        return 0x7F
    if len(upper) == 1 and "@" <= upper <= "_":
        return ord(upper) ^ 0x40
    raise EscapeError(f"^{char} is not a control key (use ^A..^Z, ^@, ^[, ^\\, ^], ^^, ^_, ^?)")


def parse_escape(spec: str) -> bytes:
    """The detach sequence ``spec`` names; ``b""`` for ``none``.

    A key is ``^X`` (caret notation), ``ctrl-X`` or one ASCII character; a sequence is keys
    run together in caret notation (``^P^Q``) or separated by commas (``ctrl-p,ctrl-q``).
    """
    text = spec.strip()
    if text.lower() in ("", "none", "off"):
        return b""
    keys: list[int] = []
    for raw_part in text.split(","):
        part = raw_part.strip()
        if not part:
            raise EscapeError(f"{spec!r} has an empty key")
        if part.lower().startswith("ctrl-") and len(part) == 6:
            keys.append(_ctrl(part[5]))
        elif len(part) == 1:
            if not part.isascii():
                raise EscapeError(f"{part!r} is not an ASCII key")
            keys.append(ord(part))
        elif len(part) % 2 == 0 and all(part[i] == "^" for i in range(0, len(part), 2)):
            keys.extend(_ctrl(part[i + 1]) for i in range(0, len(part), 2))
        else:
            raise EscapeError(
                f"{part!r} is not a key: use ^X or ctrl-X (e.g. ^], ^P^Q, ctrl-p,ctrl-q) or none"
            )
    return bytes(keys)


def describe_escape(sequence: bytes) -> str:
    """How to type ``sequence``: ``Ctrl-]``, ``Ctrl-P Ctrl-Q``."""
    names = []
    for byte in sequence:
        if byte < 0x20:
            names.append(f"Ctrl-{chr(byte | 0x40)}")
        elif byte == 0x7F:
            names.append("Ctrl-?")
        else:
            names.append(chr(byte))
    return " ".join(names)


class DetachScanner:
    """Finds the detach sequence in keyboard input, even split across reads.

    :meth:`feed` returns the bytes to send to the guest and whether the sequence was seen.
    A trailing partial match is held back until the next read decides it (so with ``^P^Q``
    a lone Ctrl-P reaches the guest with the key after it); nothing after the sequence is sent.
    """

    def __init__(self, sequence: bytes) -> None:
        self.sequence = sequence
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self.sequence:
            return data, False
        buffer, self._held = self._held + data, b""
        at = buffer.find(self.sequence)
        if at >= 0:
            return buffer[:at], True
        for keep in range(min(len(self.sequence) - 1, len(buffer)), 0, -1):
            if buffer.endswith(self.sequence[:keep]):
                self._held = buffer[-keep:]
                return buffer[:-keep], False
        return buffer, False


def console_address(api: str, name: str) -> tuple[str, str | None]:
    """The WebSocket URI of ``name``'s console and, for ``unix:/path``, the socket to dial."""
    path = f"/ws/v1/vms/{quote(name, safe='')}/console"
    if api.startswith("unix:"):
        return f"ws://localhost{path}", api.removeprefix("unix:")
    parts = urlsplit(api)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise VolarError(
            f"cannot use {api!r} as volantd's address: use http(s)://HOST:PORT or unix:/path"
        )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", "")), None


def open_console(api: str, name: str, api_key: str | None, timeout: float = 10) -> ClientConnection:
    """Open the console WebSocket; every failure becomes a one-line :class:`VolarError`."""
    uri, socket_path = console_address(api, name)
    options: dict[str, Any] = {
        "additional_headers": {"Authorization": f"Bearer {api_key}"} if api_key else None,
        "compression": None,  # keystrokes and short bursts: latency over bytes
        "open_timeout": timeout,
        "close_timeout": 2,
        "max_size": 1 << 20,
    }
    try:
        if socket_path is not None:
            ws = unix_connect(socket_path, uri, **options)
        else:
            ws = connect(uri, **options)
    except InvalidStatus as error:
        status = error.response.status_code
        if status == 401:
            raise VolarError(f"volantd at {api} refused the API key (HTTP 401)") from None
        if status == 403:
            raise VolarError(
                f'volantd at {api} refused the console of vm "{name}" (HTTP 403): the VM is '
                "unknown or not running, or the API key is wrong"
            ) from None
        if status == 404:
            raise VolarError(f"volantd at {api} has no console endpoint (HTTP 404)") from None
        raise VolarError(f"volantd at {api} refused the console (HTTP {status})") from None
    except (InvalidURI, InvalidHandshake) as error:
        raise VolarError(f"console handshake with volantd at {api} failed: {error}") from None
    except TimeoutError:
        raise VolarError(f"volantd at {api} did not answer in time") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise VolarError(f"cannot reach volantd at {api}: {reason}: is it running?") from None
    assert isinstance(ws, ClientConnection)
    return ws


class Outcome(enum.Enum):
    DETACHED = "detached"  # the user pressed the detach key
    INPUT_ENDED = "input ended"  # stdin (not a terminal) ended and the output went quiet
    CLOSED = "closed"  # volantd closed the console normally (the VM stopped, volantd exits)
    REFUSED = "refused"  # volantd refused the session (VM not running, console in use)
    LOST = "lost"  # the connection failed or closed with an error


@dataclass
class Result:
    outcome: Outcome
    reason: str = ""


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived while attached."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def terminating_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated`, so ``finally`` blocks run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on the terminal ``fd`` for the duration; the old settings always come back."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Receiver(threading.Thread):
    """Copies console output to ``out_fd`` until the connection ends, then wakes the loop."""

    def __init__(self, ws: ClientConnection, out_fd: int, wake_fd: int) -> None:
        super().__init__(name="console-output", daemon=True)
        self.ws, self.out_fd, self.wake_fd = ws, out_fd, wake_fd
        self.last_output = time.monotonic()
        self.result = Result(Outcome.CLOSED)

    def run(self) -> None:
        try:
            for message in self.ws:
                data = message.encode() if isinstance(message, str) else message
                _write_all(self.out_fd, data)
                self.last_output = time.monotonic()
        except ConnectionClosed as error:
            self.result = _closed(error)
        except OSError as error:  # stdout went away (a closed pipe)
            self.result = Result(Outcome.LOST, f"cannot write the output: {error.strerror}")
        else:
            self.result = _closed(self.ws.protocol.close_exc)
        finally:
            with contextlib.suppress(OSError):
                os.write(self.wake_fd, b"x")


def _closed(error: ConnectionClosed) -> Result:
    close = error.rcvd
    if close is not None and close.code in (1000, 1001):
        return Result(Outcome.CLOSED, close.reason)
    if close is not None and 4000 <= close.code < 5000:  # volantd's application codes
        return Result(Outcome.REFUSED, close.reason or f"code {close.code}")
    if close is not None:
        return Result(Outcome.LOST, f"{close.reason or 'closed'} (code {close.code})")
    return Result(Outcome.LOST, "the connection to volantd broke")


def attach(
    ws: ClientConnection,
    in_fd: int,
    out_fd: int,
    *,
    escape: bytes = b"\x1d",
    interactive: bool = True,
    linger: float = 2.0,
) -> Result:
    """Copy ``in_fd`` to the console and the console to ``out_fd`` until one side is done.

    ``interactive``: watch for ``escape`` (the caller puts the terminal in raw mode).
    Otherwise copy ``in_fd`` until it ends, then print output until ``linger`` quiet seconds.
    The connection is closed on return.
    """
    wake_read, wake_write = os.pipe()
    receiver = _Receiver(ws, out_fd, wake_write)
    scanner = DetachScanner(escape if interactive else b"")
    receiver.start()
    try:
        watched = [in_fd, wake_read]
        input_ended_at: float | None = None
        while True:
            if input_ended_at is None:
                timeout = None
            else:
                quiet_since = max(input_ended_at, receiver.last_output)
                timeout = quiet_since + linger - time.monotonic()
                if timeout <= 0:
                    return Result(Outcome.INPUT_ENDED)
            ready, _, _ = select.select(watched, [], [], timeout)
            if wake_read in ready:
                return receiver.result
            if in_fd not in ready:
                continue
            try:
                data = os.read(in_fd, READ_SIZE)
            except OSError:  # EIO: the terminal hung up
                data = b""
            if not data:
                if interactive:
                    return Result(Outcome.LOST, "the terminal went away")
                watched.remove(in_fd)
                input_ended_at = time.monotonic()
                continue
            forward, detached = scanner.feed(data)
            try:
                if forward:
                    ws.send(forward)
            except ConnectionClosed:
                receiver.join(2)
                return receiver.result
            if detached:
                return Result(Outcome.DETACHED)
    finally:
        ws.close()
        receiver.join(5)
        os.close(wake_read)
        os.close(wake_write)
