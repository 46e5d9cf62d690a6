"""kestrel's HTTP API against a real HTTP workload, with kestrel run as an ordinary process.

Every test here runs twice: ``python -m kestrel`` from the workspace, and the zipapp under
Debian's ``/usr/bin/python3 -s -S -B`` the way the guest init runs it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from kestrel_harness import Kestrel, http_workload, marked_processes, wait_until

from support.guest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def web(start_kestrel, launcher: list[str], mark: Path) -> Kestrel:
    """kestrel supervising the test HTTP app, once the app is healthy."""
    port = free_port()
    kestrel = start_kestrel(
        http_workload(port, mark, restart={"policy": "on-failure", "backoff_initial_ms": 50}),
        command=launcher,
        health_check={"endpoint": "/", "timeout_ms": 20_000},
    )
    kestrel.wait_event("workload_healthy")
    return kestrel


def test_healthz_and_info_report_a_healthy_workload_and_boot_timings(web: Kestrel) -> None:
    assert web.get_json("/healthz") == {"status": "ok"}
    info = web.info()
    assert info["vm"] == {"name": "kestrel-test", "id": "42"}
    assert info["hostname_configured"] == "kestrel-test"
    assert info["agent"]["pid1"] is False and info["agent"]["system"] is False
    assert info["network"] is None  # not PID 1: the host's network is left alone
    workload = info["workload"]
    assert workload["state"] == "healthy"
    assert workload["restarts"] == 0 and workload["last_exit"] is None
    assert workload["health"]["problem"] is None
    assert workload["health"]["url"].endswith("/")
    boot = info["boot"]
    assert boot["boot_epoch_ns"] == 123
    assert boot["agent_started_ms"] <= boot["workload_started_ms"] <= boot["workload_healthy_ms"]
    assert boot["agent_started_ms"] <= boot["agent_ready_ms"]
    names = [event["event"] for event in web.events()]
    # the workload is started (and probed) before the API is up, and told at once
    assert names[0] == "workload_started"
    assert sorted(names[1:3]) == ["agent_ready", "workload_healthy"]
    started = web.events()[0]
    assert started["pid"] == workload["pid"] and started["restarts"] == 0
    assert started["uptime_ms"] == boot["workload_started_ms"] <= boot["agent_ready_ms"]
    assert names.count("workload_healthy") == 1


def test_console_events_are_compact_json_lines(web: Kestrel) -> None:
    lines = [ln for ln in web.console.read_text().splitlines() if ln.startswith("volant-event ")]
    assert lines
    for line in lines:
        payload = line.removeprefix("volant-event ")
        assert json.dumps(json.loads(payload), separators=(",", ":")) == payload
        assert list(json.loads(payload))[:2] == ["event", "uptime_ms"]
    assert "workload listening" not in web.console.read_text()  # workload output stays off it


def test_proxy_serves_the_workload_page_on_both_prefixes(web: Kestrel) -> None:
    for path in ("/v1/proxy/", "/v1/"):
        reply = web.request("GET", path)
        assert reply.status == 200
        assert reply.body == b"hello from the workload\n"
    assert web.request("GET", "/v1/proxy/status/418").status == 418
    assert web.request("GET", "/v1/proxy/nothing-here").status == 404


def test_proxy_streams_a_large_response(web: Kestrel) -> None:
    size = 8 * 1024 * 1024 + 123
    reply = web.request("GET", f"/v1/proxy/big?size={size}")
    assert reply.status == 200
    assert len(reply.body) == size
    assert reply.body[:3] == b"\x00\x00\x00" and reply.body[-1] == (size - 1) // 65536 % 251


def test_proxy_forwards_request_bodies_fixed_and_chunked(web: Kestrel) -> None:
    body = os.urandom(3 * 1024 * 1024)
    reply = web.request("POST", "/v1/proxy/echo", body, {"Content-Type": "application/x-test"})
    assert reply.status == 200
    assert reply.headers["x-body-length"] == str(len(body))
    assert reply.body == body

    connection = web.connection()
    pieces = [b"first,", b"second,", b"third"]
    connection.request("POST", "/v1/echo", body=iter(pieces), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 200
    assert response.read() == b"".join(pieces)
    connection.close()


def test_proxy_drops_hop_by_hop_headers_and_adds_forwarding_headers(web: Kestrel) -> None:
    reply = web.request(
        "GET",
        "/v1/proxy/headers?x=1",
        headers={"Connection": "keep-alive, X-Private", "X-Private": "secret", "X-Kept": "yes"},
    )
    seen = reply.json()
    assert seen["x-kept"] == "yes"
    assert "x-private" not in seen and "keep-alive" not in seen
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["host"].startswith("127.0.0.1:")


def test_exec_returns_exit_code_and_output(web: Kestrel, tmp_path: Path) -> None:
    reply = web.request(
        "POST",
        "/v1/exec",
        json.dumps(
            {
                "cmd": ["sh", "-c", 'echo "out $GREETING"; echo err >&2; cat; pwd; exit 3'],
                "env": {"GREETING": "hi"},
                "cwd": str(tmp_path),
                "stdin": "from stdin\n",
            }
        ),
    )
    assert reply.status == 200
    result = reply.json()
    assert result["exit_code"] == 3 and result["signal"] is None
    assert result["stdout"] == f"out hi\nfrom stdin\n{tmp_path}\n"
    assert result["stderr"] == "err\n"
    assert result["timed_out"] is False

    shell = web.request("POST", "/v1/exec", json.dumps({"cmd": "echo $((6 * 7))"})).json()
    assert (shell["exit_code"], shell["stdout"]) == (0, "42\n")


def test_exec_times_out_and_kills_the_command(web: Kestrel) -> None:
    result = web.request(
        "POST", "/v1/exec", json.dumps({"cmd": ["sleep", "600"], "timeout_s": 0.2})
    ).json()
    assert result["timed_out"] is True
    assert result["exit_code"] == -9 and result["signal"] == "SIGKILL"


def test_exec_streams_output_as_json_lines(web: Kestrel) -> None:
    connection = web.connection()
    command = {"cmd": ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2; exit 7"]}
    connection.request("POST", "/v1/exec?stream=1", body=json.dumps(command))
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    messages = [json.loads(line) for line in response.read().splitlines()]
    connection.close()
    stdout = "".join(m["data"] for m in messages if m.get("stream") == "stdout")
    stderr = "".join(m["data"] for m in messages if m.get("stream") == "stderr")
    assert stdout == "line 1\nline 2\nline 3\n" and stderr == "oops\n"
    assert messages[-1]["exit_code"] == 7


def test_exec_rejects_bad_requests_with_json_errors(web: Kestrel) -> None:
    cases = [
        ("not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "JSON object"),
        (json.dumps({"cmd": []}), 400, "cmd"),
        (json.dumps({"cmd": ["true"], "cwd": "relative"}), 400, "cwd"),
        (json.dumps({"cmd": ["/no/such/program"]}), 400, "not found"),
        (json.dumps({"cmd": ["true"], "cwd": "/no/such/dir"}), 400, "/no/such/dir"),
        (json.dumps({"cmd": ["true"], "bogus": 1}), 400, "bogus"),
    ]
    for body, status, fragment in cases:
        reply = web.request("POST", "/v1/exec", body)
        assert reply.status == status, (body, reply.body)
        assert fragment in reply.json()["error"], (body, reply.body)
    assert web.get_json("/healthz") == {"status": "ok"}


def test_files_round_trip_keeps_content_and_mode(web: Kestrel, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "file.bin"
    content = os.urandom(5 * 1024 * 1024 + 7)
    reply = web.request("PUT", f"/v1/files?path={target}&mode=0600", content)
    assert reply.status == 201
    assert reply.json() == {
        "path": str(target),
        "size": len(content),
        "mode": "0600",
        "created": True,
    }
    assert target.read_bytes() == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    download = web.request("GET", f"/v1/files?path={target}")
    assert download.status == 200
    assert download.body == content
    assert download.headers["x-file-mode"] == "0600"
    assert download.headers["content-length"] == str(len(content))

    again = web.request("PUT", f"/v1/files?path={target}", b"replaced")
    assert again.status == 200 and again.json()["created"] is False
    assert target.read_bytes() == b"replaced" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no temporary left


def test_files_errors_name_the_path(web: Kestrel, tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    reply = web.request("GET", f"/v1/files?path={missing}")
    assert reply.status == 404
    assert str(missing) in reply.json()["error"]
    assert web.request("GET", f"/v1/files?path={tmp_path}").status == 400
    assert web.request("PUT", f"/v1/files?path={tmp_path}", b"x").status == 400
    assert web.request("GET", "/v1/files?path=relative/file").status == 400
    assert web.request("GET", "/v1/files").status == 400
    assert web.request("PUT", f"/v1/files?path={tmp_path}/f&mode=9999", b"x").status == 400
    assert web.request("DELETE", f"/v1/files?path={missing}").status == 405


def test_logs_tail_and_stream_filter(web: Kestrel) -> None:
    wait_until(
        lambda: any("workload listening" in ln["line"] for ln in web.get_json("/v1/logs")["lines"]),
        "the workload's first stdout line in the logs",
    )
    everything = web.get_json("/v1/logs?tail=all")["lines"]
    assert {"stdout", "stderr"} <= {line["stream"] for line in everything}
    stdout = web.get_json("/v1/logs?stream=stdout")["lines"]
    assert [line["line"] for line in stdout] == [
        "workload listening on " + web.info()["workload"]["argv"][-1]
    ]
    assert all(
        line["stream"] == "stderr" for line in web.get_json("/v1/logs?stream=stderr")["lines"]
    )
    last = web.get_json("/v1/logs?tail=1")["lines"]
    assert len(last) == 1 and last[0]["seq"] == everything[-1]["seq"]
    assert last[0]["time"].endswith("Z")
    assert web.request("GET", "/v1/logs?tail=many").status == 400
    assert web.request("GET", "/v1/logs?stream=console").status == 400


def test_logs_follow_streams_new_lines_until_the_client_leaves(web: Kestrel) -> None:
    connection = web.connection(timeout=30)
    connection.request("GET", "/v1/logs?follow=1&tail=0&stream=stderr")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/x-ndjson"
    web.request("GET", "/v1/proxy/status/299")  # the workload logs each request on stderr
    line = json.loads(response.readline() or b"null")
    while line is not None and "/status/299" not in line.get("line", ""):
        line = json.loads(response.readline() or b"null")
    assert line is not None and line["stream"] == "stderr"
    connection.close()
    assert web.get_json("/healthz") == {"status": "ok"}


def test_logs_stream_as_server_sent_events(web: Kestrel) -> None:
    connection = web.connection(timeout=30)
    connection.request("GET", "/v1/logs/stream?tail=all", headers={"Accept": "text/event-stream"})
    response = connection.getresponse()
    assert response.getheader("Content-Type") == "text/event-stream"
    data = None
    while data is None:
        raw = response.readline().decode()
        if raw.startswith("data: "):
            data = json.loads(raw.removeprefix("data: "))
    assert set(data) == {"stream", "line", "timestamp"}
    connection.close()


def test_unknown_and_wrongly_used_endpoints(web: Kestrel) -> None:
    wrong = web.request("POST", "/v1/info")
    assert wrong.status == 405 and wrong.headers["allow"] == "GET"
    assert "error" in wrong.json()
    assert web.request("GET", "/nope").status == 404
    assert web.request("GET", "/v1/shutdown").status == 405


def test_shutdown_stops_the_workload_and_exits_zero(web: Kestrel, mark: Path) -> None:
    assert marked_processes(mark)
    reply = web.request("POST", "/v1/shutdown")
    assert reply.status == 202 and reply.json() == {"status": "shutting down"}
    assert web.wait_exit() == 0
    assert not marked_processes(mark)
    events = [e["event"] for e in web.events()]
    assert events[-2:] == ["workload_exited", "shutdown"]  # shutdown is the last word
    exited, shutdown = web.events()[-2:]
    assert exited["signal"] == "SIGTERM" and exited["will_restart"] is False
    assert shutdown["reason"] == "api"
