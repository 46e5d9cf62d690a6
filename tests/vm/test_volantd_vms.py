"""The example plugin through a real volantd: boot, serve, stop, restart, crash, adoption."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest
import websockets.sync.client

from support.guest import wait_for
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.vm


def port_of(vm: dict, purpose: str) -> int:
    return next(lease["host_port"] for lease in vm["ports"] if lease["purpose"] == purpose)


def qemu_alive(pid: int | None) -> bool:
    return pid is not None and psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"


def test_create_boots_and_the_workload_serves(volantd: Volantd) -> None:
    with volantd.client(timeout=180) as client:
        created = client.post(
            "/api/v1/vms?wait=healthy", json={"name": "web-1", "plugin": "busybox-httpd"}
        )
        assert created.status_code == 201, created.text
        vm = created.json()
        assert vm["status"] == "running" and qemu_alive(vm["pid"])
        assert httpx.get(f"{vm['agent_url']}/healthz", timeout=10).json() == {"status": "ok"}
        page = httpx.get(f"http://127.0.0.1:{port_of(vm, 'expose:http')}/", timeout=10)
        assert "Hello from a Volant microVM" in page.text
        steps = vm["boot"]["steps"]
        assert {"init_started", "workload_started", "workload_healthy", "agent_ready"} <= set(steps)
        assert steps["init_started"]["guest_uptime_ms"] < steps["agent_ready"]["guest_uptime_ms"]
        assert 0 < vm["boot"]["vmm_spawned_ms"] <= steps["agent_ready"]["host_ms"]
        assert steps["agent_ready"]["guest_uptime_ms"] > 0
        again = client.post("/api/v1/vms/web-1/start")
        assert again.status_code == 409 and "is running" in again.json()["error"]


def test_the_guest_is_reachable_through_volantd(volantd: Volantd) -> None:
    base = "/api/v1/vms/web-1"
    with volantd.client(timeout=60) as client:
        info = client.get(f"{base}/agent/v1/info").json()
        assert info["vm"]["name"] == "web-1" and info["workload"]["state"] == "healthy"
        assert "Hello from a Volant microVM" in client.get(f"{base}/proxy/").text
        ran = client.post(f"{base}/exec", json={"cmd": ["hostname"]}).json()
        assert ran["exit_code"] == 0 and ran["stdout"].strip() == "web-1"
        put = client.put(f"{base}/files", params={"path": "/tmp/note"}, content=b"through volantd")
        assert put.status_code in (200, 201, 204), put.text
        assert (
            client.get(f"{base}/files", params={"path": "/tmp/note"}).content == b"through volantd"
        )
        logs = client.get(f"{base}/logs", params={"tail": "all"})
        lines = [entry["line"] for entry in logs.json()["lines"]]
        assert any("response:200" in line for line in lines), lines  # httpd's request log
        assert "volant-event" in client.get(f"{base}/serial").text
        unknown = client.post(f"{base}/actions/busybox-httpd/nothing", json={})
        assert unknown.status_code == 404 and "no action 'nothing'" in unknown.json()["error"]

    url = volantd.url.replace("http://", "ws://") + "/ws/v1/vms/web-1/console"
    with websockets.sync.client.connect(url) as console:
        console.send(b"echo console-$((6*7))\n")
        seen = b""
        while b"console-42" not in seen:
            seen += console.recv(timeout=30)
        with (  # one session at a time
            websockets.sync.client.connect(url) as second,
            pytest.raises(websockets.exceptions.ConnectionClosed) as refused,
        ):
            second.recv(timeout=10)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 4409
        assert "already in use" in refused.value.rcvd.reason
    with websockets.sync.client.connect(url) as again:  # free once the first one left
        again.send(b"echo again-$((6*7))\n")
        seen = b""
        while b"again-42" not in seen:
            seen += again.recv(timeout=30)


def test_stop_through_the_agent_then_start_and_restart(volantd: Volantd) -> None:
    with volantd.client(timeout=180) as client:
        before = client.get("/api/v1/vms/web-1").json()
        stopped = client.post("/api/v1/vms/web-1/stop").json()
        assert stopped["status"] == "stopped" and stopped["pid"] is None
        assert stopped["ports"] == [] and not qemu_alive(before["pid"])
        refused = client.get("/api/v1/vms/web-1/agent/healthz")
        assert refused.status_code == 409 and "is stopped" in refused.json()["error"]
        started = client.post("/api/v1/vms/web-1/start").json()
        assert started["status"] == "running" and qemu_alive(started["pid"])
        patched = client.patch("/api/v1/vms/web-1/config", json={"resources": {"memory_mb": 320}})
        assert patched.json()["config"]["resources"]["memory_mb"] == 320
        assert client.get("/api/v1/vms/web-1").json()["memory_mb"] == 256  # on the next start
        restarted = client.post("/api/v1/vms/web-1/restart").json()
        assert restarted["status"] == "running" and restarted["pid"] != started["pid"]
        assert restarted["memory_mb"] == 320 and restarted["config_version"] == 2
        assert "320M" in psutil.Process(restarted["pid"]).cmdline()
        assert not qemu_alive(started["pid"])


def test_a_vm_outlives_a_killed_volantd_and_is_adopted(
    volantd: Volantd, home: Path, daemon_env: dict[str, str]
) -> None:
    with volantd.client() as client:
        vm = client.get("/api/v1/vms/web-1").json()
    volantd.stop(signal.SIGKILL)
    assert qemu_alive(vm["pid"])
    with running_volantd(home, env=daemon_env) as second, second.client() as client:
        adopted = client.get("/api/v1/vms/web-1").json()
        assert (adopted["status"], adopted["pid"]) == ("running", vm["pid"])
        assert adopted["ports"] == vm["ports"]
        assert httpx.get(f"{adopted['agent_url']}/healthz", timeout=10).status_code == 200

        os.kill(vm["pid"], signal.SIGKILL)  # QEMU dies under a running VM
        crashed = wait_for(
            lambda: (r := client.get("/api/v1/vms/web-1").json())["status"] == "crashed" and r,
            15, "the crash to be noticed",
        )  # fmt: skip
        assert crashed["ports"] == [] and "VMM died" in crashed["last_error"]
        types = [
            json.loads(line[5:])["message"]
            for line in _sse_lines(client, "web-1")
            if line.startswith("data:")
        ]
        assert "adopted after a volantd restart" in types

        timed_out = client.post(
            "/api/v1/vms?timeout=15",
            json={"name": "never-ready", "plugin": "busybox-httpd",
                  "kernel_cmdline": "rdinit=/bin/sleep -- 1000"},
            timeout=120,
        )  # fmt: skip
        assert timed_out.status_code == 504, timed_out.text
        assert "waiting for its agent" in timed_out.json()["error"]
        stuck = client.get("/api/v1/vms/never-ready").json()
        assert stuck["status"] == "crashed" and stuck["ports"] == [] and stuck["pid"] is None

        leftover = client.get("/api/v1/vms/web-1").json()
        assert client.delete("/api/v1/vms/web-1").status_code == 204
        assert client.delete("/api/v1/vms/never-ready").status_code == 204
        assert not Path(leftover["serial_log"]).parent.exists()
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(home) in " ".join(p.info["cmdline"] or [])
    ]


def _sse_lines(client: httpx.Client, vm: str) -> list[str]:
    lines = []
    with client.stream("GET", "/api/v1/events/vms", params={"since": 0, "vm": vm}) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if "VM_STATE" in line and "crashed" in line:
                break
    return lines


@pytest.mark.parametrize("delay", [0.5, 2.5])
def test_volantd_killed_during_a_create_leaves_no_orphan(
    volantd: Volantd, home: Path, daemon_env: dict[str, str], delay: float
) -> None:
    """Wherever the kill lands (building boot media, spawning QEMU, booting), the restarted
    volantd either adopts the VM or marks it crashed: never a QEMU it does not know, never a
    port lease without a running VM."""
    import threading
    import time

    volantd.stop(signal.SIGKILL)  # the module's daemon may be gone already; start our own
    name = f"killed-{int(delay * 10)}"
    with running_volantd(home, env=daemon_env) as first:

        def create() -> None:
            with contextlib.suppress(httpx.HTTPError), first.client(timeout=60) as client:
                client.post("/api/v1/vms", json={"name": name, "plugin": "busybox-httpd"})

        thread = threading.Thread(target=create)
        thread.start()
        time.sleep(delay)
        first.stop(signal.SIGKILL)
        thread.join()
    time.sleep(1)  # a bound QEMU notices its owner's death through the lifeline pipe
    with running_volantd(home, env=daemon_env) as second, second.client() as client:
        vms = {vm["name"]: vm for vm in client.get("/api/v1/vms").json()}
        qemus = [
            p for p in psutil.process_iter(["cmdline"])
            if "qemu-system" in " ".join(p.info["cmdline"] or [])
            and str(home) in " ".join(p.info["cmdline"] or [])
            and p.info["cmdline"][0].endswith("qemu-system-x86_64")
        ]  # fmt: skip
        running = {vm["pid"] for vm in vms.values() if vm["status"] in ("starting", "running")}
        assert {p.pid for p in qemus} == running
        for vm in vms.values():
            if vm["status"] not in ("starting", "running"):
                assert vm["ports"] == [] and vm["pid"] is None, vm
        if name in vms:
            assert client.delete(f"/api/v1/vms/{name}").status_code == 204


def test_an_async_create_answers_at_once_and_still_has_a_deadline(
    volantd: Volantd, home: Path, daemon_env: dict[str, str]
) -> None:
    volantd.stop()  # the module's daemon (it installed the plugin) may still run: one per home
    with running_volantd(home, env=daemon_env) as daemon, daemon.client(timeout=60) as client:
        accepted = client.post(
            "/api/v1/vms?async=true", json={"name": "bg-1", "plugin": "busybox-httpd"}
        )
        assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
        wait_for(lambda: client.get("/api/v1/vms/bg-1").json()["status"] == "running", 120,
                 "the background boot")  # fmt: skip
        doomed = client.post(
            "/api/v1/vms?async=true&timeout=10",
            json={"name": "bg-2", "plugin": "busybox-httpd",
                  "kernel_cmdline": "rdinit=/bin/sleep -- 1000"},
        )  # fmt: skip
        assert doomed.status_code == 202
        crashed = wait_for(
            lambda: (r := client.get("/api/v1/vms/bg-2").json())["status"] == "crashed" and r,
            60, "the background boot to time out",
        )  # fmt: skip
        assert "gave up after 10 s" in crashed["last_error"] and crashed["ports"] == []
        for name in ("bg-1", "bg-2"):
            assert client.delete(f"/api/v1/vms/{name}").status_code == 204


def test_stop_vms_on_exit_stops_them_and_the_default_leaves_them_running(
    volantd: Volantd, home: Path, daemon_env: dict[str, str]
) -> None:
    volantd.stop()  # one daemon per home
    with running_volantd(home, env=daemon_env) as daemon, daemon.client(timeout=120) as client:
        kept = client.post("/api/v1/vms", json={"name": "kept-1", "plugin": "busybox-httpd"})
        assert kept.status_code == 201, kept.text
    assert qemu_alive(kept.json()["pid"])  # a plain SIGTERM left it running
    with running_volantd(home, "--stop-vms-on-exit", env=daemon_env) as daemon:
        with daemon.client() as client:
            assert client.get("/api/v1/vms/kept-1").json()["status"] == "running"  # adopted
        assert daemon.stop() in (0, -signal.SIGTERM)
    assert not qemu_alive(kept.json()["pid"])
    with running_volantd(home, env=daemon_env) as daemon, daemon.client() as client:
        assert client.get("/api/v1/vms/kept-1").json()["status"] == "stopped"
        assert client.delete("/api/v1/vms/kept-1").status_code == 204
