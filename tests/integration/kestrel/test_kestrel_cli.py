"""kestrel's command line as an ordinary process: fatal errors are reported and exit non-zero."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kestrel_harness import write_vm_json

pytestmark = pytest.mark.integration


def run_kestrel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kestrel", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_config_is_reported_on_the_console(tmp_path: Path) -> None:
    result = run_kestrel("--config", str(tmp_path / "vm.json"))
    assert result.returncode == 2
    assert (
        result.stdout
        == f"kestrel: fatal: cannot read {tmp_path / 'vm.json'}: No such file or directory\n"
    )


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    config = write_vm_json(tmp_path / "vm.json", workload=None)
    document = json.loads(config.read_text())
    del document["vm"]["id"]
    config.write_text(json.dumps(document))
    result = run_kestrel("--config", str(config))
    assert result.returncode == 2
    assert "vm.id: is missing" in result.stdout


def test_busy_agent_port_is_fatal_with_the_reason(tmp_path: Path) -> None:
    config = write_vm_json(tmp_path / "vm.json", workload=None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_kestrel("--config", str(config), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} for the agent API" in result.stdout


def test_version() -> None:
    result = run_kestrel("--version")
    assert result.returncode == 0 and result.stdout.startswith("kestrel ")
