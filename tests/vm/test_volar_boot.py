"""`volar vms create --wait` and `volar deployments` booting the example plugin through a real
volantd: boot phases as they happen, how to reach the VM, replicas that become ready."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.volantd import Volantd

pytestmark = pytest.mark.vm

VOLAR = Path(sys.executable).parent / "volar"


def volar(daemon: Volantd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOLAR), "--api", daemon.url, *args], capture_output=True, text=True, timeout=300
    )


def test_create_wait_shows_the_boot_and_how_to_reach_the_vm(volantd: Volantd) -> None:
    created = volar(volantd, "vms", "create", "boot-1", "--plugin", "busybox-httpd",
                    "--wait", "healthy")  # fmt: skip
    assert created.returncode == 0, created.stderr
    progress = created.stderr.splitlines()
    assert progress[0] == "Booting boot-1 (busybox-httpd)..."
    labels = [re.sub(r"^\s+[\d.]+ s\s+", "", line) for line in progress[1:]]
    assert labels[:3] == ["hypervisor started", "guest init started", "workload started"]
    assert {"agent ready", "workload healthy"} == set(labels[3:])
    seconds = [float(line.split()[0]) for line in progress[1:]]
    assert seconds[:3] == sorted(seconds[:3])
    page_url = re.search(r"^  http: (http://127\.0\.0\.1:\d+/)$", created.stdout, re.M)
    assert page_url, created.stdout
    assert "Hello from a Volant microVM" in httpx.get(page_url.group(1), timeout=10).text
    assert "console: volar vms console boot-1" in created.stdout
    quiet = volar(volantd, "vms", "create", "boot-2", "--plugin", "busybox-httpd",
                  "--wait", "none", "-o", "json")  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["status"] in ("starting", "running")
    for name in ("boot-1", "boot-2"):
        assert volar(volantd, "vms", "delete", name).returncode == 0


def test_a_deployment_scales_up_and_down(volantd: Volantd) -> None:
    created = volar(volantd, "deployments", "create", "web", "--plugin", "busybox-httpd",
                    "--replicas", "1", "--wait", "-o", "json")  # fmt: skip
    assert created.returncode == 0, created.stderr
    deployment = json.loads(created.stdout)
    assert deployment["ready_replicas"] == 1 and deployment["replicas"][0]["ready"] is True
    assert "1/1 replicas ready" in created.stderr
    replica = deployment["replicas"][0]["name"]
    vm = json.loads(volar(volantd, "vms", "get", replica, "-o", "json").stdout)
    assert vm["status"] == "running" and vm["deployment"] == "web"
    scaled = volar(volantd, "deployments", "scale", "web", "0", "--wait")
    assert scaled.returncode == 0, scaled.stderr
    assert volar(volantd, "vms", "get", replica).returncode == 1
    assert volar(volantd, "deployments", "delete", "web").returncode == 0
    assert json.loads(volar(volantd, "vms", "list", "-o", "json").stdout) == []
