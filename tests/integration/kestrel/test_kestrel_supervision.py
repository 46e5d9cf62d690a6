"""Workload supervision: restart policies, health states, stopping, with real processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from kestrel_harness import http_workload, marked_processes, wait_until

from support.guest import free_port

pytestmark = pytest.mark.integration

FAST_BACKOFF = {"backoff_initial_ms": 50, "backoff_max_ms": 100}


def process_workload(script: str, mark: Path, **extra: object) -> dict[str, object]:
    return {
        "type": "process",
        "entrypoint": ["/bin/sh", "-c", script],
        "env": {"KESTREL_TEST_MARK": str(mark)},
        **extra,
    }


def test_killed_workload_is_restarted_on_failure(start_kestrel, mark: Path) -> None:
    port = free_port()
    kestrel = start_kestrel(
        http_workload(port, mark, restart={"policy": "on-failure", **FAST_BACKOFF}),
        health_check={"endpoint": "/", "timeout_ms": 20_000},
    )
    kestrel.wait_event("workload_healthy")
    first = kestrel.info()["workload"]["pid"]
    os.kill(first, signal.SIGKILL)

    exited = kestrel.wait_event("workload_exited")
    assert exited["pid"] == first and exited["signal"] == "SIGKILL"
    assert exited["exit_code"] == -9 and exited["will_restart"] is True
    kestrel.wait_event("workload_healthy", count=2)
    workload = kestrel.info()["workload"]
    assert workload["restarts"] == 1 and workload["state"] == "healthy"
    assert workload["pid"] != first
    assert workload["last_exit"]["description"] == "killed by SIGKILL"
    assert kestrel.request("GET", "/v1/proxy/").status == 200


def test_never_policy_leaves_the_workload_down_and_the_proxy_says_so(start_kestrel, mark) -> None:
    port = free_port()
    kestrel = start_kestrel(
        http_workload(port, mark, restart={"policy": "never"}),
        health_check={"endpoint": "/", "timeout_ms": 20_000},
    )
    kestrel.wait_event("workload_healthy")
    os.kill(kestrel.info()["workload"]["pid"], signal.SIGTERM)
    assert kestrel.wait_event("workload_exited")["will_restart"] is False
    workload = wait_until(
        lambda: (w := kestrel.info()["workload"])["state"] == "exited" and w, "state exited"
    )
    assert workload["restarts"] == 0 and workload["pid"] is None
    reply = kestrel.request("GET", "/v1/proxy/")
    assert reply.status == 502
    assert "not running (exited)" in reply.json()["error"]
    assert kestrel.get_json("/healthz") == {"status": "ok"}  # the agent stays up


def test_always_restarts_a_successful_exit_up_to_max_restarts(start_kestrel, mark) -> None:
    kestrel = start_kestrel(
        process_workload(
            "echo run; exit 0",
            mark,
            restart={"policy": "always", "max_restarts": 2, **FAST_BACKOFF},
        )
    )
    workload = wait_until(
        lambda: (w := kestrel.info()["workload"])["state"] == "exited" and w, "restarts to stop"
    )
    assert workload["restarts"] == 2
    assert [e["will_restart"] for e in kestrel.events() if e["event"] == "workload_exited"] == [
        True,
        True,
        False,
    ]
    runs = kestrel.get_json("/v1/logs?stream=stdout")["lines"]
    assert [line["line"] for line in runs] == ["run", "run", "run"]


def test_on_failure_does_not_restart_a_clean_exit(start_kestrel, mark) -> None:
    kestrel = start_kestrel(
        process_workload("exit 0", mark, restart={"policy": "on-failure", **FAST_BACKOFF})
    )
    assert kestrel.wait_event("workload_exited")["will_restart"] is False
    wait_until(lambda: kestrel.info()["workload"]["state"] == "exited", "state exited")
    assert kestrel.info()["workload"]["restarts"] == 0


def test_process_workload_is_healthy_while_it_runs(start_kestrel, mark) -> None:
    kestrel = start_kestrel(process_workload("echo started; exec sleep 600", mark))
    healthy = kestrel.wait_event("workload_healthy")
    workload = kestrel.info()["workload"]
    assert workload["state"] == "healthy" and workload["health"] is None
    assert healthy["pid"] == workload["pid"]
    assert kestrel.request("GET", "/v1/proxy/").status == 404  # nothing to proxy to


def test_workload_that_cannot_start_is_reported_and_the_agent_serves(start_kestrel, mark) -> None:
    kestrel = start_kestrel(
        {"type": "process", "entrypoint": ["/no/such/program"], "restart": {"policy": "never"}}
    )
    exited = kestrel.wait_event("workload_exited")
    assert exited["pid"] is None and "/no/such/program" in exited["error"]
    workload = wait_until(
        lambda: (w := kestrel.info()["workload"])["state"] == "exited" and w, "state exited"
    )
    assert "not found" in workload["last_error"]
    assert kestrel.get_json("/healthz") == {"status": "ok"}


def test_workload_runs_in_its_workdir_with_its_env_and_a_clean_environment(
    start_kestrel, mark, tmp_path: Path
) -> None:
    script = 'echo "cwd=$(pwd) greeting=$GREETING home=$HOME python=${PYTHONHOME-unset}"; sleep 600'
    kestrel = start_kestrel(
        process_workload(
            script,
            mark,
            workdir=str(tmp_path),
            env={
                "GREETING": "hello",
                "KESTREL_TEST_MARK": str(mark),
            },
        )
    )
    line = wait_until(
        lambda: kestrel.get_json("/v1/logs?stream=stdout")["lines"], "the workload's line"
    )[0]["line"]
    assert line == f"cwd={tmp_path} greeting=hello home=/root python=unset"


def test_failing_health_check_marks_the_workload_unhealthy(start_kestrel, mark) -> None:
    port = free_port()
    kestrel = start_kestrel(
        http_workload(port, mark), health_check={"endpoint": "/status/503", "timeout_ms": 300}
    )
    unhealthy = kestrel.wait_event("workload_unhealthy")
    assert unhealthy["reason"] == "HTTP 503"
    workload = kestrel.info()["workload"]
    assert workload["state"] == "unhealthy" and workload["health"]["problem"] == "HTTP 503"
    assert kestrel.request("GET", "/v1/proxy/").status == 200  # still proxied


def test_sigterm_stops_the_workload_and_exits_zero(start_kestrel, mark) -> None:
    kestrel = start_kestrel(process_workload("exec sleep 600", mark))
    kestrel.wait_event("workload_healthy")
    assert kestrel.process is not None
    kestrel.process.send_signal(signal.SIGTERM)
    assert kestrel.wait_exit() == 0
    assert not marked_processes(mark)
    assert kestrel.events()[-1] | {"uptime_ms": 0} == {
        "event": "shutdown",
        "uptime_ms": 0,
        "reason": "signal SIGTERM",
    }


def test_workload_ignoring_sigterm_is_killed_after_the_grace_period(start_kestrel, mark) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 1; done"
    kestrel = start_kestrel(process_workload(script, mark), args=["--stop-timeout", "0.3"])
    wait_until(lambda: kestrel.get_json("/v1/logs?stream=stdout")["lines"], "the workload ready")
    assert kestrel.request("POST", "/v1/shutdown").status == 202
    assert kestrel.wait_exit() == 0
    assert kestrel.events()[-2]["signal"] == "SIGKILL"
    assert not marked_processes(mark)


def test_agent_without_a_workload(start_kestrel) -> None:
    kestrel = start_kestrel(None)
    assert kestrel.info()["workload"] is None
    reply = kestrel.request("GET", "/v1/anything")
    assert reply.status == 404 and "no http workload" in reply.json()["error"]
    result = kestrel.request("POST", "/v1/exec", json.dumps({"cmd": ["echo", "ok"]})).json()
    assert result["stdout"] == "ok\n"
    assert [e["event"] for e in kestrel.events()] == ["agent_ready"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_workload_and_exec_run_as_the_configured_user(start_kestrel, mark) -> None:
    kestrel = start_kestrel(
        process_workload(
            'echo "$(id -u):$(id -g) $HOME $USER"; exec sleep 600', mark, user="nobody"
        )
    )
    line = wait_until(
        lambda: kestrel.get_json("/v1/logs?stream=stdout")["lines"], "the workload's line"
    )[0]["line"]
    assert line == "65534:65534 /nonexistent nobody"
    result = kestrel.request(
        "POST", "/v1/exec", json.dumps({"cmd": ["id", "-u"], "user": "nobody"})
    ).json()
    assert result["stdout"] == "65534\n"
    unknown = kestrel.request("POST", "/v1/exec", json.dumps({"cmd": ["id"], "user": "nosuchuser"}))
    assert unknown.status == 400 and "nosuchuser" in unknown.json()["error"]


def test_https_base_url_is_reported_not_fatal(start_kestrel, mark) -> None:
    workload = process_workload("exec sleep 600", mark)
    workload.update(type="http", base_url="https://127.0.0.1:9443")
    kestrel = start_kestrel(workload, health_check={"endpoint": "/", "timeout_ms": 100})
    assert "only http:// URLs" in kestrel.wait_event("workload_unhealthy")["reason"]
    reply = kestrel.request("GET", "/v1/proxy/")
    assert reply.status == 502 and "plain HTTP only" in reply.json()["error"]
