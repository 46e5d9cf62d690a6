"""volar's console logic without a VM: keys, detach detection, addresses, and attach() against a
real WebSocket server on loopback."""

from __future__ import annotations

import os
import signal
import termios
import threading
from collections.abc import Callable, Iterator

import pytest
from websockets.sync.server import ServerConnection, serve

from volar.client import VolarError
from volar.console import (
    DetachScanner,
    EscapeError,
    Outcome,
    Terminated,
    attach,
    console_address,
    describe_escape,
    open_console,
    parse_escape,
    raw_terminal,
    terminating_signals,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("^]", b"\x1d"),
        ("^P", b"\x10"),
        ("^p", b"\x10"),
        ("^P^Q", b"\x10\x11"),
        ("ctrl-p,ctrl-q", b"\x10\x11"),
        ("Ctrl-]", b"\x1d"),
        ("^?", b"\x7f"),
        ("^@", b"\x00"),
        ("~", b"~"),
        ("^", b"^"),
        ("none", b""),
        ("NONE", b""),
        ("", b""),
    ],
)
def test_escape_specs(spec: str, expected: bytes) -> None:
    assert parse_escape(spec) == expected


@pytest.mark.parametrize("spec", ["^1", "ctrl-1", "^]x", "abc", "ctrl-p,", "é", "^P^"])
def test_bad_escape_specs_are_refused(spec: str) -> None:
    with pytest.raises(EscapeError):
        parse_escape(spec)


def test_escape_descriptions() -> None:
    assert describe_escape(b"\x1d") == "Ctrl-]"
    assert describe_escape(parse_escape("^P^Q")) == "Ctrl-P Ctrl-Q"
    assert describe_escape(b"\x7f~") == "Ctrl-? ~"


def test_a_single_key_detaches_and_nothing_after_it_is_sent() -> None:
    scanner = DetachScanner(b"\x1d")
    assert scanner.feed(b"ls\r") == (b"ls\r", False)
    assert scanner.feed(b"abc\x1ddef") == (b"abc", True)


def test_a_sequence_split_across_reads_still_detaches() -> None:
    scanner = DetachScanner(b"\x10\x11")
    assert scanner.feed(b"echo\x10") == (b"echo", False)  # Ctrl-P held back
    assert scanner.feed(b"\x11rest") == (b"", True)


def test_a_partial_sequence_that_does_not_complete_is_sent() -> None:
    scanner = DetachScanner(b"\x10\x11")
    assert scanner.feed(b"\x10") == (b"", False)
    assert scanner.feed(b"x") == (b"\x10x", False)
    assert scanner.feed(b"\x10\x10") == (b"\x10", False)  # the second may still start it
    assert scanner.feed(b"\x11") == (b"", True)


def test_a_long_sequence_byte_by_byte() -> None:
    scanner = DetachScanner(b"abc")
    sent = b""
    for byte in b"xaabab":
        sent += scanner.feed(bytes([byte]))[0]
    assert sent == b"xaab"  # the final "ab" is held back
    assert scanner.feed(b"c") == (b"", True)


def test_no_escape_passes_everything() -> None:
    assert DetachScanner(b"").feed(b"\x1d\x10") == (b"\x1d\x10", False)


def test_console_addresses() -> None:
    assert console_address("http://127.0.0.1:7777", "web-1") == (
        "ws://127.0.0.1:7777/ws/v1/vms/web-1/console",
        None,
    )
    assert console_address("https://volant.example/api/", "a b") == (
        "wss://volant.example/api/ws/v1/vms/a%20b/console",
        None,
    )
    assert console_address("unix:/run/volantd.sock", "web-1") == (
        "ws://localhost/ws/v1/vms/web-1/console",
        "/run/volantd.sock",
    )
    with pytest.raises(VolarError, match="cannot use"):
        console_address("ftp://x", "web-1")


def test_a_server_that_is_down_is_named() -> None:
    with pytest.raises(VolarError, match=r"cannot reach volantd at http://127\.0\.0\.1:9: "):
        open_console("http://127.0.0.1:9", "web-1", None)
    with pytest.raises(VolarError, match=r"at unix:/nonexistent/volantd\.sock: "):
        open_console("unix:/nonexistent/volantd.sock", "web-1", None)


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[ServerConnection], None]], str]]:
    """Start a WebSocket server on loopback with the given handler; returns its http URL."""
    servers = []

    def start(handler: Callable[[ServerConnection], None]) -> str:
        instance = serve(handler, "127.0.0.1", 0)
        servers.append(instance)
        threading.Thread(target=instance.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{instance.socket.getsockname()[1]}"

    yield start
    for instance in servers:
        instance.shutdown()


def echo_upper(ws: ServerConnection) -> None:
    for message in ws:
        data = message if isinstance(message, bytes) else message.encode()
        ws.send(data.upper())


def test_attach_detaches_on_the_key_and_sends_what_came_before(server) -> None:
    received: list[bytes] = []
    finished = threading.Event()

    def record(ws: ServerConnection) -> None:
        for message in ws:
            received.append(message if isinstance(message, bytes) else message.encode())
        finished.set()

    url = server(record)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, b"hello\r\x1dnot this")
    with open_console(url, "vm", "key") as ws:
        result = attach(ws, in_r, out_w, escape=b"\x1d")
    assert result.outcome is Outcome.DETACHED
    assert finished.wait(5) and b"".join(received) == b"hello\r"
    for fd in (in_r, in_w, out_r, out_w):
        os.close(fd)


def test_attach_copies_piped_input_then_lingers_for_output(server) -> None:
    url = server(echo_upper)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, b"echo hi\n\x1d")  # no detach key when not interactive
    os.close(in_w)
    with open_console(url, "vm", None) as ws:
        result = attach(ws, in_r, out_w, interactive=False, linger=0.5)
    assert result.outcome is Outcome.INPUT_ENDED
    os.close(out_w)
    assert os.read(out_r, 1024) == b"ECHO HI\n\x1d"
    os.close(in_r)
    os.close(out_r)


def test_attach_reports_how_the_server_closed(server) -> None:
    def greet_and_close(ws: ServerConnection) -> None:
        ws.send(b"bye\r\n")
        ws.close(1000, "vm stopped")

    def refuse(ws: ServerConnection) -> None:
        ws.close(4409, "vm 'x' is stopped")

    def break_off(ws: ServerConnection) -> None:
        ws.close(1011, "internal error")

    for handler, outcome, reason in [
        (greet_and_close, Outcome.CLOSED, "vm stopped"),
        (refuse, Outcome.REFUSED, "vm 'x' is stopped"),
        (break_off, Outcome.LOST, "internal error (code 1011)"),
    ]:
        url = server(handler)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        with open_console(url, "x", None) as ws:
            result = attach(ws, in_r, out_w)
        assert (result.outcome, result.reason) == (outcome, reason)
        if outcome is Outcome.CLOSED:
            assert os.read(out_r, 1024) == b"bye\r\n"
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)


def test_a_refused_handshake_becomes_one_message() -> None:
    def reject(connection: ServerConnection, request: object) -> object:
        return connection.respond(403, "no\n")

    rejecting = serve(echo_upper, "127.0.0.1", 0, process_request=reject)
    threading.Thread(target=rejecting.serve_forever, daemon=True).start()
    try:
        port = rejecting.socket.getsockname()[1]
        with pytest.raises(VolarError, match=r'refused the console of vm "web-1" \(HTTP 403\)'):
            open_console(f"http://127.0.0.1:{port}", "web-1", None)
    finally:
        rejecting.shutdown()


def test_raw_mode_is_undone_even_on_a_signal() -> None:
    master, slave = os.openpty()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        before = termios.tcgetattr(slave)
        with pytest.raises(Terminated), terminating_signals(), raw_terminal(slave):
            assert termios.tcgetattr(slave)[3] & termios.ECHO == 0
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1)  # give the handler a bytecode boundary
        assert termios.tcgetattr(slave) == before
        assert signal.getsignal(signal.SIGTERM) == previous
    finally:
        os.close(master)
        os.close(slave)
