"""A deployment of the example plugin through a real volantd: replicas boot and serve, a killed
replica is restarted at once, scale-down removes the highest index, delete leaves nothing."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from support.guest import wait_for
from support.volantd import Volantd

pytestmark = pytest.mark.vm

READY_TIMEOUT_S = 120


def qemu_alive(pid: int | None) -> bool:
    return pid is not None and psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"


def ready(client: httpx.Client, count: int) -> dict | None:
    deployment = client.get("/api/v1/deployments/web").json()
    return deployment if deployment["ready_replicas"] == count else None


def vm(client: httpx.Client, name: str) -> dict:
    return client.get(f"/api/v1/vms/{name}").json()


def test_replicas_boot_and_serve(volantd: Volantd) -> None:
    with volantd.client() as client:
        created = client.post(
            "/api/v1/deployments",
            json={"name": "web", "replicas": 2, "config": {"plugin": "busybox-httpd"}},
        )
        assert created.status_code == 201, created.text
        assert [r["name"] for r in created.json()["replicas"]] == ["web-1", "web-2"]
        deployment = wait_for(lambda: ready(client, 2), READY_TIMEOUT_S, "2 ready replicas")
        assert [(r["name"], r["status"], r["ready"]) for r in deployment["replicas"]] == [
            ("web-1", "running", True),
            ("web-2", "running", True),
        ]
        for name in ("web-1", "web-2"):
            replica = vm(client, name)
            assert replica["deployment"] == "web" and qemu_alive(replica["pid"])
            assert "workload_healthy" in replica["boot"]["steps"]
            port = next(p["host_port"] for p in replica["ports"] if p["purpose"] == "expose:http")
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
            assert "Hello from a Volant microVM" in page.text


def test_a_killed_replica_is_restarted_at_once(volantd: Volantd) -> None:
    with volantd.client() as client:
        victim, survivor = vm(client, "web-2"), vm(client, "web-1")
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: not ready(client, 2), 15, "the crash to be noticed")
        wait_for(
            lambda: ready(client, 2) and vm(client, "web-2")["pid"] != victim["pid"],
            READY_TIMEOUT_S, "the restarted replica to be ready",
        )  # fmt: skip
        restarted = vm(client, "web-2")
        assert restarted["id"] == victim["id"] and qemu_alive(restarted["pid"])  # in place
        assert not qemu_alive(victim["pid"])
        assert vm(client, "web-1")["pid"] == survivor["pid"]  # the other replica was left alone
    events = _events(volantd, "web-2")
    crashed = next(e for e in events if e["type"] == "VM_STATE" and e["status"] == "crashed")
    booted = next(e for e in events if e["message"] == "boot requested" and e["id"] > crashed["id"])
    assert "VMM died" in crashed["message"]
    waited = _at(booted) - _at(crashed)
    assert waited.total_seconds() < 3  # the crash event, not the 5 s loop, brought it back


def test_scale_down_removes_the_highest_index(volantd: Volantd) -> None:
    with volantd.client() as client:
        first, second = vm(client, "web-1"), vm(client, "web-2")
        scaled = client.patch("/api/v1/deployments/web", json={"replicas": 1})
        assert scaled.status_code == 200, scaled.text
        assert [(r["name"], r["ready"]) for r in scaled.json()["replicas"]] == [("web-1", True)]
        assert scaled.json()["ready_replicas"] == 1
        assert client.get("/api/v1/vms/web-2").status_code == 404
        assert not qemu_alive(second["pid"])
        assert vm(client, "web-1")["pid"] == first["pid"] and qemu_alive(first["pid"])


def test_delete_stops_and_removes_every_replica(volantd: Volantd, home: Path) -> None:
    with volantd.client() as client:
        pid = vm(client, "web-1")["pid"]
        assert client.delete("/api/v1/deployments/web").status_code == 204
        assert client.get("/api/v1/deployments/web").status_code == 404
        assert client.get("/api/v1/vms").json() == []
        assert not qemu_alive(pid)
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(home) in " ".join(p.info["cmdline"] or [])
    ]


def _events(volantd: Volantd, vm_name: str) -> list[dict]:
    """The VM's stored events so far (the stream is read until it is quiet for 1 s)."""
    events: list[dict] = []
    with (
        volantd.client(timeout=httpx.Timeout(10, read=1)) as client,
        client.stream("GET", "/api/v1/events/vms", params={"since": 0, "vm": vm_name}) as stream,
    ):
        try:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        except httpx.ReadTimeout:
            pass
    return events


def _at(event: dict) -> datetime:
    return datetime.fromisoformat(event["timestamp"])
