"""The per-VM monitor, exercised with an ordinary long-running process as its 'VMM'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from volantd import vmm_monitor as monitor


def start_monitor(run_dir: Path) -> tuple[subprocess.Popen, int]:
    read_end, lifeline = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", monitor.__name__, str(run_dir), "--", "sleep", "300"],
        stdin=read_end,
        start_new_session=True,
    )
    os.close(read_end)
    deadline = time.monotonic() + 10
    while not (run_dir / monitor.VMM_PID_FILE).exists():
        assert time.monotonic() < deadline, "monitor never started its VMM"
        time.sleep(0.01)
    return process, lifeline


def vmm_pid(run_dir: Path) -> int:
    return int((run_dir / monitor.VMM_PID_FILE).read_text())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def exit_record(run_dir: Path) -> dict:
    return json.loads((run_dir / monitor.EXIT_FILE).read_text())


def test_vmm_dies_when_the_owner_goes_away_before_detaching(tmp_path: Path):
    process, lifeline = start_monitor(tmp_path)
    pid = vmm_pid(tmp_path)
    assert psutil.Process(pid).cwd() == str(tmp_path)
    os.close(lifeline)  # what the kernel does when the owner dies
    assert process.wait(10) != 0
    assert gone(pid)
    assert exit_record(tmp_path)["reason"] == "owner exited before detaching the VM"


def test_a_detached_vmm_outlives_its_owner(tmp_path: Path):
    process, lifeline = start_monitor(tmp_path)
    pid = vmm_pid(tmp_path)
    os.write(lifeline, b"detach\n")
    os.close(lifeline)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(1)
    assert not gone(pid)
    os.kill(pid, signal.SIGTERM)  # the VMM ends on its own: the monitor records it and exits
    process.wait(10)
    record = exit_record(tmp_path)
    assert record["signal"] == signal.SIGTERM and record["reason"] == "exited"


def test_terminating_the_monitor_kills_its_vmm(tmp_path: Path):
    process, lifeline = start_monitor(tmp_path)
    pid = vmm_pid(tmp_path)
    os.write(lifeline, b"detach\n")
    process.send_signal(signal.SIGTERM)
    process.wait(10)
    os.close(lifeline)
    assert gone(pid)
    assert exit_record(tmp_path)["reason"] == f"signal {signal.SIGTERM.value}"


def test_killing_the_monitor_outright_takes_the_vmm_with_it(tmp_path: Path):
    process, lifeline = start_monitor(tmp_path)
    pid = vmm_pid(tmp_path)
    os.write(lifeline, b"detach\n")
    process.kill()
    process.wait(10)
    os.close(lifeline)
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline, "VMM outlived its monitor"
        time.sleep(0.05)
