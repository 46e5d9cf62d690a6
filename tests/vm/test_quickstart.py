"""The README's quickstart, `./scripts/demo`, as a user runs it: twice (the second time as
`make demo`), then stopped (`./scripts/demo stop`, then `make demo-stop` again)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from support.guest import free_port, wait_for
from support.plugins import REPO

pytestmark = pytest.mark.vm

PAGE = "Hello from a Volant microVM"
RUNNING_ROW = re.compile(r"^\s*demo-web\s+running\s+busybox-httpd\s", re.MULTILINE)


def demo_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The README's command, `./scripts/demo`, run from the repository root."""
    return subprocess.run(
        ["./scripts/demo", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=420
    )


def make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The same through the Makefile (`make demo`, `make demo-stop`)."""
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), target],
        env=env, capture_output=True, text=True, timeout=420,
    )  # fmt: skip


def demo_processes(home: Path) -> list[psutil.Process]:
    """Live processes whose command line names the demo's home: volantd, VM monitors, QEMU."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or ())
            if str(home) in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now (as volantd would: SO_REUSEADDR, which
    connections of the stopped daemon lingering in TIME_WAIT do not block)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def demo(tmp_path: Path, reference_kernel) -> Iterator[tuple[dict[str, str], Path, int]]:
    """The environment of a demo with its own home and port; whatever it left is stopped."""
    home = tmp_path / "demo"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLANT_")}
    env.update(
        VOLANT_DEMO_HOME=str(home),
        VOLANT_DEMO_PORT=str(port),
        VOLANT_DEMO_SKIP_BOOTSTRAP="1",  # CI ran scripts/bootstrap before the tests
        VOLANT_KERNELS_DIR=str(reference_kernel.directory.parent),
    )
    if os.environ.get("VOLANT_ACCEL"):
        env["VOLANT_ACCEL"] = os.environ["VOLANT_ACCEL"]
    try:
        yield env, home, port
    finally:
        subprocess.run([str(REPO / "scripts/demo"), "stop"], env=env, capture_output=True)
        for process in demo_processes(home):  # only if the test failed half-way
            process.kill()


def test_the_demo_serves_the_page_reruns_and_stops_cleanly(demo) -> None:
    env, home, port = demo

    first = demo_script(env)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert PAGE in first.stdout
    assert RUNNING_ROW.search(first.stdout), first.stdout
    assert "Stop everything: ./scripts/demo stop" in first.stdout
    volantd_pid = int((home / "volantd.pid").read_text())
    assert psutil.Process(volantd_pid).is_running()

    # Re-running reuses the daemon and boots a fresh demo-web from the image it rebuilt.
    second = make("demo", env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"reusing the demo's volantd (pid {volantd_pid})" in second.stdout
    assert PAGE in second.stdout
    assert RUNNING_ROW.search(second.stdout), second.stdout
    vms = httpx.get(f"http://127.0.0.1:{port}/api/v1/vms", timeout=10).json()
    assert [vm["name"] for vm in vms] == ["demo-web"]
    qemu_pid = vms[0]["pid"]
    assert qemu_pid and psutil.pid_exists(qemu_pid)

    stop = demo_script(env, "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    wait_for(lambda: not demo_processes(home), 20, "the demo's processes to end")
    assert not psutil.pid_exists(volantd_pid) or psutil.Process(volantd_pid).status() == "zombie"
    assert port_is_free(port)

    again = make("demo-stop", env)  # stopping a stopped demo is fine too
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_failing_step_is_named_with_the_end_of_volantds_log(demo, tmp_path: Path) -> None:
    env, home, _ = demo
    env["VOLANT_KERNELS_DIR"] = str(tmp_path / "no-kernels")  # the boot cannot find a kernel

    failed = make("demo", env)

    assert failed.returncode != 0
    assert 'demo: step "5/7 booting VM demo-web' in failed.stderr, failed.stderr
    assert f"--- last lines of {home}/volantd.log ---" in failed.stderr
    assert "POST /api/v1/vms" in failed.stderr  # the log's tail


def test_a_port_taken_by_another_program_is_reported(demo) -> None:
    env, home, _ = demo
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env["VOLANT_DEMO_PORT"] = str(squatter.getsockname()[1])

        failed = make("demo", env)

    assert failed.returncode != 0
    assert "is in use by another program: set VOLANT_DEMO_PORT" in failed.stderr, failed.stderr
    assert not demo_processes(home)
