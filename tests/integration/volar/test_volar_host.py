"""The real `volar doctor` / `volar setup` (and `volantd host check`) on this host.

Nothing here installs packages or touches /etc: setup runs either with --dry-run, or with a
PATH holding only links to the tools the host already has (no apt-get, no systemctl) and a
unit file under tmp_path, on a host without systemd.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.guest import free_port
from support.volantd import running_volantd

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
VOLAR = BIN / "volar"
VOLANTD = BIN / "volantd"


def run(
    command: list[str], env: Mapping[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("VOLANT_API_BASE", "VOLANT_API_KEY")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
    )  # fmt: skip


def nowhere() -> str:
    """An API URL on loopback where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


@pytest.fixture
def host_tools_path(tmp_path: Path) -> str:
    """A PATH with links to this host's QEMU, busybox, compiler, ip and the optional tools setup
    installs (nft, dnsmasq, mkfs.fat, mcopy) only: no apt, no systemctl."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("qemu-system-x86_64", "busybox", "cc", "gcc", "ip"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"this host has no {tool}")
        (folder / tool).symlink_to(found)
    for tool in ("nft", "dnsmasq", "mkfs.fat", "mcopy"):
        if found := shutil.which(tool):
            (folder / tool).symlink_to(found)
    return str(folder)


def test_doctor_reports_qemu_kernel_and_accel(reference_kernel: object) -> None:
    result = run([str(VOLAR), "--api", nowhere(), "doctor", "-o", "json"])
    report = json.loads(result.stdout)
    by_name = checks(report)
    assert {"volantd", "qemu", "kernel", "kvm", "accel", "api"} <= set(by_name)
    assert by_name["qemu"]["status"] == "OK" and by_name["qemu"]["value"]
    assert by_name["kernel"]["status"] == "OK" and by_name["kernel"]["value"]
    accel = by_name["accel"]
    assert accel["status"] == "OK" and accel["value"] in ("kvm", "tcg")
    assert report["accel"]["accel"] == accel["value"] and report["accel"]["reason"]
    assert by_name["api"]["status"] == "WARN" and "cannot reach volantd" in by_name["api"]["detail"]
    assert report["ready"] is True and result.returncode == 0, result.stderr
    # the verdict is cached now: the table shows the same decision, quickly
    table = run([str(VOLAR), "--api", nowhere(), "doctor"], timeout=60)
    assert table.returncode == 0
    assert f"accel {accel['value']}: " in " ".join(table.stdout.split())  # any column widths
    assert "Ready: everything required is in place." in table.stdout


def test_doctor_sees_a_running_volantd(tmp_path: Path) -> None:
    with running_volantd(tmp_path / "home") as daemon:
        version = daemon.client().get("/api/v1/system/info").json()["version"]
        result = run([str(VOLAR), "--api", daemon.url, "doctor", "--no-probe", "-o", "yaml"])
    api = checks(yaml.safe_load(result.stdout))["api"]
    assert api["status"] == "OK" and api["value"] == version
    assert daemon.url in api["detail"]


def test_doctor_without_qemu_exits_1(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "VOLANT_ACCEL": "tcg"}
    result = run([str(VOLAR), "--api", nowhere(), "doctor", "-o", "json"], env)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    qemu = checks(report)["qemu"]
    assert report["ready"] is False
    assert qemu["status"] == "MISSING" and qemu["fix"] == "apt-get install qemu-system-x86"
    table = run([str(VOLAR), "--api", nowhere(), "doctor"], env)
    assert table.returncode == 1
    assert any(line.split()[:2] == ["MISSING", "qemu"] for line in table.stdout.splitlines())
    assert "Not ready: qemu" in table.stdout


def test_setup_dry_run_prints_commands_and_changes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    unit = tmp_path / "units" / "volantd.service"
    command = [str(VOLAR), "setup", "--dry-run", "--systemd", "--unit-file", str(unit)]
    result = run(command, {"PATH": str(empty)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "apt-get update -q" in lines
    install = next(line for line in lines if " apt-get install " in line)
    assert install.startswith("DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert "qemu-system-x86" in install.split()
    assert f"cat > {unit} <<'EOF'" in lines
    assert any(line.startswith("ExecStart=") and line.endswith("volantd serve") for line in lines)
    assert lines[-1].startswith("#")  # dry run: nothing was changed (...)
    assert sorted(os.listdir(tmp_path)) == ["bin"] and os.listdir(empty) == []


def test_setup_on_a_ready_host_does_nothing(reference_kernel: object, host_tools_path: str) -> None:
    env = {"PATH": host_tools_path}
    preview = run([str(VOLAR), "setup", "--dry-run"], env)
    if "apt-get install" in preview.stdout:
        pytest.skip("this host lacks packages: a real setup would install them")
    # no --yes and no terminal: had there been anything to do, setup would refuse
    result = run([str(VOLAR), "setup"], env)
    assert result.returncode == 0, result.stderr
    assert "Nothing to do: this host is set up." in result.stdout
    assert "ok: host packages" in result.stdout and "ok: reference kernel" in result.stdout
    assert "+ " not in result.stdout


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd runs here")
def test_setup_writes_the_unit_once(
    reference_kernel: object, host_tools_path: str, tmp_path: Path
) -> None:
    env = {"PATH": host_tools_path}
    unit = tmp_path / "units" / "volantd.service"
    command = [str(VOLAR), "setup", "--systemd", "--unit-file", str(unit)]
    if "apt-get install" in run([*command, "--dry-run"], env).stdout:
        pytest.skip("this host lacks packages: a real setup would install them")
    refused = run(command, env)
    assert refused.returncode == 1 and "pass --yes" in refused.stderr and not unit.exists()
    first = run([*command, "--yes"], env)
    assert first.returncode == 0, first.stderr
    assert f"+ write {unit}" in first.stdout and "Setup complete." in first.stdout
    assert "systemd is not running here" in first.stdout
    content = unit.read_text()
    assert f"ExecStart={VOLANTD} serve" in content
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    second = run([*command, "--yes"], env)
    assert second.returncode == 0 and "Nothing to do" in second.stdout
    assert unit.read_text() == content


def test_setup_stops_at_the_first_failure_with_its_stderr(
    host_tools_path: str, tmp_path: Path
) -> None:
    # an empty VOLANT_HOME needs the kernel, and without apt-cache on PATH the fetch fails
    env = {"PATH": host_tools_path, "VOLANT_HOME": str(tmp_path / "home")}
    if "apt-get install" in run([str(VOLAR), "setup", "--dry-run"], env).stdout:
        pytest.skip("this host lacks packages: a real setup would install them")
    result = run([str(VOLAR), "setup", "--yes"], env)
    assert result.returncode == 1
    assert f"+ {VOLANTD} kernels fetch" in result.stdout
    assert "error: fetch the reference kernel failed (exit 1):" in result.stderr
    assert "apt-cache is required" in result.stderr
    assert "Setup complete." not in result.stdout


def test_setup_teardown_without_a_record_has_nothing_to_do(tmp_path: Path) -> None:
    # (the real --bridge and --teardown run in network namespaces: test_volar_bridge.py)
    result = run([str(VOLAR), "setup", "--teardown", "-y"], {"VOLANT_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "Nothing to tear down" in result.stdout and os.listdir(tmp_path) == []


def test_volantd_host_check_honours_volant_accel() -> None:
    forced = run([str(VOLANTD), "host", "check", "--json", "--no-probe"], {"VOLANT_ACCEL": "tcg"})
    facts = json.loads(forced.stdout)
    assert facts["accel"] == {
        "requested": "tcg",
        "probed": False,
        "accel": "tcg",
        "reason": "forced by VOLANT_ACCEL=tcg",
    }
    assert set(facts) >= {"volantd", "home", "qemu", "kernel", "kvm", "vsock"}
    bad = json.loads(run([str(VOLANTD), "host", "check", "--json"], {"VOLANT_ACCEL": "x"}).stdout)
    assert bad["accel"]["accel"] is None and "use auto, kvm or tcg" in bad["accel"]["reason"]
