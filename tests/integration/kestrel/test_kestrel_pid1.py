"""kestrel as PID 1 (of a PID namespace): hostname, network by ioctl, DNS, console shell,
orphan reaping and power-off, the way it runs inside a VM.

The agent gets fresh PID, network, UTS and mount namespaces; its "power off" ends only its
PID namespace. Needs root, util-linux ``unshare`` and iproute2 ``ip`` (used by the test to
build a veth and to read the result; kestrel itself uses neither).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kestrel_harness import write_vm_json

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = ["unshare", "--net", "--uts", "--mount", "--pid", "--fork", "--mount-proc", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs root and working namespaces")
def test_kestrel_as_pid1_sets_up_the_machine_and_powers_off(zipapp: Path, tmp_path: Path) -> None:
    config = write_vm_json(
        tmp_path / "vm.json",
        workload={
            "type": "process",
            "entrypoint": ["/bin/sh", "-c", "(sleep 0.3 &); exec sleep 600"],
            "restart": "on-failure",
        },
        console_shell=True,
    )
    result = subprocess.run(
        [
            *("unshare", "--net", "--uts", "--mount", "--propagation", "private"),
            *(
                sys.executable,
                str(HERE / "pid1_driver.py"),
                str(zipapp),
                str(config),
                str(tmp_path),
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)

    info = report["info"]
    assert info["agent"]["pid1"] is True and info["agent"]["system"] is True
    assert info["agent"]["listen"] == ["0.0.0.0:8080"]
    assert report["hostname"] == info["hostname"] == "kestrel-test"
    network = info["network"]
    assert network["ok"] is True, network["errors"]
    assert network["interface"] == "eth0"
    assert network["steps"][0] == "lo up"

    (eth0,) = report["addresses"]
    assert eth0["address"] == "02:00:00:00:00:01"  # kestrel set the configured MAC
    assert "UP" in eth0["flags"]
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] == [
        ("10.0.2.15", 24)
    ]
    assert [(r["dst"], r["gateway"]) for r in report["routes"]] == [("default", "10.0.2.2")]
    assert report["resolv_conf"] == "nameserver 10.0.2.3\n"

    assert info["workload"]["state"] == "healthy"
    assert info["console_shell"]["pid"] is not None and info["console_shell"]["error"] is None
    assert info["boot"]["init_started_ms"] == 1234
    assert report["shell_answered"] is True
    assert report["orphans_reaped"] >= 1 and report["zombies"] == []

    # reboot(RB_POWER_OFF) in a PID namespace ends it as if its init died of SIGINT
    assert report["unshare_status"] == -signal.SIGINT
    assert report["events"][0] == "workload_started"  # before the API: see docs/guest.md
    assert sorted(report["events"][1:3]) == ["agent_ready", "workload_healthy"]
    assert report["events"][-2:] == ["workload_exited", "shutdown"]
    assert "shell-42" in report["console"]
