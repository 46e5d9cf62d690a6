"""The health probe that runs before kestrel's event loop: a plain socket and a thread."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kestrel.config import HealthCheck, RestartPolicy, Workload
from kestrel.console import Console
from kestrel.healthcheck import FirstHealthCheck, HealthProbe, probe_blocking


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _probe(port: int, any_status: bool = False, timeout_ms: int = 5000) -> HealthProbe:
    return HealthProbe(f"http://127.0.0.1:{port}/health", timeout_ms, 10, any_status)


def _web(port: int, timeout_ms: int = 5000) -> Workload:
    """An http workload whose health check is GET /health on `port`."""
    check = HealthCheck("/health", timeout_ms, 10)
    base = f"http://127.0.0.1:{port}"
    return Workload("http", ("/bin/app",), (), {}, "/", None, RestartPolicy(), base, check)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _console(tmp_path) -> tuple[Console, object]:
    path = tmp_path / "console"
    return Console.open(str(path)), path


def test_probe_reports_status_and_refusals(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    assert probe_blocking(_probe(port)) is None
    server.status = 503  # type: ignore[attr-defined]
    assert probe_blocking(_probe(port)) == "HTTP 503"
    assert probe_blocking(_probe(port, any_status=True)) is None
    refused = probe_blocking(_probe(_closed_port()))
    assert refused is not None and "cannot connect to http://127.0.0.1:" in refused
    assert "refused" in refused.lower()
    https = HealthProbe("https://127.0.0.1:1/", 100, 10, False)
    assert probe_blocking(https) == (
        "cannot probe https://127.0.0.1:1/: only http:// URLs are supported"
    )


def test_probe_rejects_an_upstream_that_does_not_speak_http() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer(reply: bytes) -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(reply)

        for reply, expected in [
            (b"SSH-2.0-OpenSSH\r\n", "the upstream sent invalid HTTP: no status line"),
            (b"", "the upstream closed the connection without a response"),
        ]:
            thread = threading.Thread(target=answer, args=(reply,))
            thread.start()
            assert probe_blocking(_probe(port)) == expected
            thread.join()


def _events(path) -> list[dict]:
    prefix = "volant-event "
    lines = path.read_text().splitlines()
    return [json.loads(line[len(prefix) :]) for line in lines if line.startswith(prefix)]


def test_first_check_announces_healthy_once_and_hands_the_event_over(
    server: ThreadingHTTPServer, tmp_path
) -> None:
    console, path = _console(tmp_path)
    check = FirstHealthCheck(_web(server.server_address[1]), console, 77, time.monotonic())
    check.start()
    deadline = time.monotonic() + 10
    while check.healthy is None and time.monotonic() < deadline:
        time.sleep(0.01)
    healthy, problem = check.hand_over()
    assert healthy is not None and problem is None
    assert [(e["event"], e["pid"], e["restarts"]) for e in _events(path)] == [
        ("workload_healthy", 77, 0)
    ]
    assert healthy == _events(path)[0]


def test_first_check_handed_over_before_health_stays_silent(tmp_path) -> None:
    console, path = _console(tmp_path)
    port = _closed_port()
    check = FirstHealthCheck(_web(port), console, 77, time.monotonic()).start()
    deadline = time.monotonic() + 10
    while check.problem is None and time.monotonic() < deadline:
        time.sleep(0.01)
    healthy, problem = check.hand_over()
    assert healthy is None and problem is not None and "refused" in problem.lower()
    # a server appearing after the hand-over is the supervisor's business, not this thread's
    with socket.socket() as late:
        late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        late.bind(("127.0.0.1", port))
        late.listen()
        time.sleep(0.2)
    assert _events(path) == []


def test_a_process_workload_is_healthy_as_soon_as_it_runs(tmp_path) -> None:
    console, path = _console(tmp_path)
    process = Workload("process", ("/bin/app",), (), {}, "/", None, RestartPolicy(), None, None)
    check = FirstHealthCheck(process, console, 5, time.monotonic()).start()
    healthy, problem = check.hand_over()
    assert healthy is not None and healthy["pid"] == 5 and problem is None
    assert [e["event"] for e in _events(path)] == ["workload_healthy"]


def test_first_check_gives_up_at_the_deadline_counted_from_the_start(tmp_path) -> None:
    console, path = _console(tmp_path)
    started = time.monotonic() - 10  # the workload started 10 s ago; the timeout is 5 s
    check = FirstHealthCheck(_web(_closed_port()), console, 77, started).start()
    time.sleep(0.2)
    assert check.hand_over() == (None, None)  # not a single probe: the deadline had passed
    assert _events(path) == []
