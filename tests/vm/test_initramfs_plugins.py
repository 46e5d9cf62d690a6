"""Initramfs plugins end to end: fledge builds them, the QEMU driver boots them.

The default init mode runs the example plugin (busybox httpd) behind kestrel and drives it
through the agent API on a loopback forward; the custom and none init modes boot images
whose own /init prints a marker and powers the VM off.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.guest import read_log, wait_for
from support.plugins import REPO, BuiltPlugin, PluginVM, build_plugin, plugin_vm
from volantd.hypervisors import QemuDriver, VMProcess, VMState, VMStatus

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 180


def console_events(run_dir: Path) -> list[str]:
    """The names of the `volant-event` lines kestrel printed on the console, in order."""
    prefix = "volant-event "
    lines = read_log(run_dir / "serial.log").splitlines()
    return [json.loads(line[len(prefix) :])["event"] for line in lines if line.startswith(prefix)]


def run(coroutine):
    return asyncio.run(coroutine)


def wait_for_power_off(driver: QemuDriver, vm: VMProcess, timeout: float) -> VMStatus:
    async def poll() -> VMStatus:
        for _ in range(int(timeout * 10)):
            status = await driver.status(vm)
            if status.state in (VMState.STOPPED, VMState.CRASHED):
                return status
            await asyncio.sleep(0.1)
        return await driver.stop(vm, timeout=1)

    return run(poll())


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> BuiltPlugin:
    return build_plugin(REPO / "examples/busybox-httpd/fledge.toml", tmp_path_factory.mktemp("out"))


@pytest.fixture
def booted_example(
    qemu_driver: QemuDriver, reference_kernel, example_plugin: BuiltPlugin, run_dir: Path
) -> Iterator[tuple[PluginVM, VMProcess, httpx.Client]]:
    """The example plugin booted, its workload healthy according to the agent."""
    vm_plan = plugin_vm(run_dir, reference_kernel, example_plugin, guest_ports=(80,))
    vm = run(qemu_driver.start(vm_plan.spec))
    client = httpx.Client(base_url=vm_plan.agent_url(), timeout=30)
    try:

        def healthy():
            try:
                info = client.get("/v1/info").json()
            except httpx.HTTPError:
                return None
            return info if info["workload"]["state"] == "healthy" else None

        wait_for(healthy, BOOT_TIMEOUT, "kestrel to report the workload healthy")
        yield vm_plan, vm, client
    finally:
        client.close()
        run(qemu_driver.stop(vm, timeout=5))


def test_example_plugin_serves_through_kestrel(booted_example, run_dir: Path):
    vm_plan, _, agent = booted_example
    events = console_events(run_dir)
    assert events[:1] == ["workload_started"], events
    assert "agent_ready" in events and events.count("workload_healthy") == 1, events

    assert agent.get("/healthz").json() == {"status": "ok"}
    page = agent.get("/v1/proxy/")
    assert page.status_code == 200 and "Hello from a Volant microVM" in page.text
    direct = httpx.get(f"http://127.0.0.1:{vm_plan.ports[80]}/", timeout=10)
    assert "Hello from a Volant microVM" in direct.text

    executed = agent.post("/v1/exec", json={"cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    assert executed.json()["exit_code"] == 3
    assert executed.json()["stdout"] == "out\n" and executed.json()["stderr"] == "err\n"

    payload = bytes(range(256)) * 64
    assert agent.put("/v1/files", params={"path": "/tmp/blob"}, content=payload).status_code in (
        200,
        201,
        204,
    )
    assert agent.get("/v1/files", params={"path": "/tmp/blob"}).content == payload
    assert agent.get("/v1/files", params={"path": "/nope"}).status_code == 404

    logs = agent.get("/v1/logs", params={"tail": 200}).text
    assert "GET /" in logs or "response:200" in logs, logs  # httpd -v logs each request


def test_killed_workload_is_restarted_per_policy(booted_example):
    _, _, agent = booted_example
    before = agent.get("/v1/info").json()["workload"]
    killed = agent.post("/v1/exec", json={"cmd": ["kill", "-9", str(before["pid"])]})
    assert killed.json()["exit_code"] == 0

    def restarted():
        workload = agent.get("/v1/info").json()["workload"]
        return (
            workload
            if workload["restarts"] > before["restarts"] and workload["state"] == "healthy"
            else None
        )

    after = wait_for(restarted, 60, "the workload to be restarted")
    assert after["pid"] != before["pid"]
    assert "Hello from a Volant microVM" in agent.get("/v1/proxy/").text


def test_shutdown_through_the_agent_powers_the_vm_off(
    booted_example, qemu_driver: QemuDriver, run_dir: Path
):
    _, vm, agent = booted_example
    assert agent.post("/v1/shutdown").status_code == 202
    status = wait_for_power_off(qemu_driver, vm, 60)
    assert status.state is VMState.STOPPED and status.exit_code == 0, status
    assert console_events(run_dir)[-1] == "shutdown"


MARKER_INIT = textwrap.dedent("""\
    #!/bin/sh
    mount -t proc proc /proc
    echo "custom-init: running as pid $$ with $(ls /bin | wc -l) applets"
    poweroff -f
""")


@pytest.mark.parametrize("mode", ["custom", "none"])
def test_images_with_their_own_init_boot_and_power_off(
    mode: str, qemu_driver: QemuDriver, reference_kernel, run_dir: Path, tmp_path: Path
):
    project = tmp_path / "project"
    project.mkdir()
    (project / "my-init.sh").write_text(MARKER_INIT)
    (project / "my-init.sh").chmod(0o755)
    init_table = (
        '[init]\npath = "my-init.sh"\n'
        if mode == "custom"
        else '[init]\nnone = true\n\n[mappings]\n"my-init.sh" = "/init"\n'
    )
    (project / "fledge.toml").write_text(f'version = "1"\nstrategy = "initramfs"\n\n{init_table}')
    (project / "manifest.toml").write_text('name = "own-init"\nversion = "0.1.0"\n')
    plugin = build_plugin(project / "fledge.toml", tmp_path / "out")

    vm_plan = plugin_vm(run_dir, reference_kernel, plugin)
    vm = run(qemu_driver.start(vm_plan.spec))
    status = wait_for_power_off(qemu_driver, vm, BOOT_TIMEOUT)
    log = read_log(run_dir / "serial.log")
    assert "custom-init: running as pid 1 with" in log, log
    assert status.state is VMState.STOPPED and status.exit_code == 0
