"""The real `volar` against a real volantd and one booted VM: logs, exec, cp, config, scale,
operations, call and wait, each with its main failure.

The plugin is the busybox-httpd example with two more files in its web root: an OpenAPI
document (served at /openapi, where volantd looks for the workload's) and a JSON page.
"""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.plugins import REPO, build_plugin
from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.vm

VOLAR = Path(sys.executable).parent / "volar"
VM = "guest-1"
IDLE = "idle-1"  # recorded, never booted

OPENAPI = """\
openapi: 3.0.3
info: {title: busybox-httpd, version: 0.1.0}
paths:
  /:
    get: {operationId: getIndex, summary: The home page}
  /status.json:
    get: {operationId: getStatus, summary: A JSON document}
  /{page}:
    get:
      summary: Any page
      parameters: [{name: page, in: path, required: true, schema: {type: string}}]
  /missing.html:
    get: {operationId: getMissing, summary: Not there}
"""


@pytest.fixture(scope="module")
def volantd(
    home: Path, daemon_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Volantd]:
    source = tmp_path_factory.mktemp("plugin") / "busybox-httpd"
    shutil.copytree(REPO / "examples/busybox-httpd", source)
    (source / "www/openapi").write_text(OPENAPI)
    (source / "www/status.json").write_text('{"ok": true, "served_by": "busybox"}\n')
    plugin = build_plugin(source / "fledge.toml", tmp_path_factory.mktemp("out"))
    manifest_file = next(plugin.artifact.parent.glob("*.json"))
    with running_volantd(home, env=daemon_env) as daemon, daemon.client(timeout=180) as client:
        installed = client.post("/api/v1/plugins", json={"source": str(manifest_file)})
        assert installed.status_code == 201, installed.text
        for name, start in ((VM, "true"), (IDLE, "false")):
            created = client.post(
                "/api/v1/vms", params={"wait": "none", "start": start},
                json={"name": name, "plugin": "busybox-httpd"},
            )  # fmt: skip
            assert created.status_code == 201, created.text
        try:
            yield daemon
        finally:  # VMs outlive volantd: stop their QEMU before the daemon goes
            for name in (VM, IDLE):
                client.delete(f"/api/v1/vms/{name}")


@pytest.fixture(scope="module")
def waited(volantd: Volantd) -> subprocess.CompletedProcess[str]:
    """`volar vms wait --for healthy` on the VM booting in the background (every test that
    needs the guest depends on this)."""
    return volar(volantd, "vms", "wait", VM, "--for", "healthy", "--timeout", "180", timeout=200)


def volar(
    daemon: Volantd, *args: str, input: str | bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the installed `volar` against ``daemon``; text output unless ``input`` is bytes."""
    return subprocess.run(
        [str(VOLAR), "--api", daemon.url, *args], input=input, capture_output=True,
        text=not isinstance(input, bytes), timeout=timeout,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode == 1, (result.returncode, stderr)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_wait(volantd: Volantd, waited: subprocess.CompletedProcess[str]) -> None:
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == f"vm {VM} is healthy"
    running = volar(volantd, "vms", "wait", VM, "-o", "json")  # already there: at once
    assert running.returncode == 0 and json.loads(running.stdout)["status"] == "running"
    late = volar(volantd, "vms", "wait", VM, "--for", "stopped", "--timeout", "1")
    one_line_error(late, f"vm {VM} is not stopped after 1 s (it is running)")
    assert volar(volantd, "vms", "wait", IDLE, "--for", "stopped").returncode == 0  # pending
    one_line_error(volar(volantd, "vms", "wait", "nope"), 'vm "nope" not found')
    bad = volar(volantd, "vms", "wait", VM, "--for", "soon")
    assert bad.returncode == 2 and "--for must be one of" in bad.stderr


def test_logs(volantd: Volantd, waited: subprocess.CompletedProcess[str]) -> None:
    logs = volar(volantd, "vms", "logs", VM)
    assert logs.returncode == 0, logs.stderr
    assert "response:200" in logs.stdout + logs.stderr  # httpd's log of the health checks
    body = json.loads(volar(volantd, "vms", "logs", VM, "--tail", "1", "-o", "json").stdout)
    assert len(body["lines"]) == 1 and body["last_seq"] >= 1
    stamped = volar(volantd, "vms", "logs", VM, "--tail", "1", "-t")
    assert (stamped.stdout + stamped.stderr)[:2] == "20"  # 2025-...Z first
    assert volar(volantd, "vms", "logs", VM, "--tail", "some").returncode == 2
    one_line_error(volar(volantd, "vms", "logs", "nope"), 'vm "nope" not found')
    one_line_error(volar(volantd, "vms", "logs", IDLE), f"vm '{IDLE}' is pending")

    follow = subprocess.Popen(
        [str(VOLAR), "--api", volantd.url, "vms", "logs", VM, "-f", "--tail", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        with volantd.client() as client:
            for _ in range(30):  # until the follow is connected: each request logs a line
                client.get(f"/api/v1/vms/{VM}/proxy/")
                if select.select([follow.stdout], [], [], 1)[0]:
                    break
        assert "response:200" in follow.stdout.readline()
        follow.send_signal(signal.SIGINT)  # Ctrl-C
        assert follow.wait(10) == 0
    finally:
        follow.kill()


def test_exec(volantd: Volantd, waited: subprocess.CompletedProcess[str]) -> None:
    ran = volar(volantd, "vms", "exec", VM, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    env = volar(
        volantd, "vms", "exec", VM, "--env", "GREETING=hi there", "--workdir", "/var/www",
        "--", "sh", "-c", 'echo "$GREETING in $(pwd)"',
    )  # fmt: skip
    assert (env.returncode, env.stdout) == (0, "hi there in /var/www\n"), env.stderr
    fed = volar(volantd, "vms", "exec", VM, "-i", "--", "tr", "a-z", "A-Z", input="shout\n")
    assert (fed.returncode, fed.stdout) == (0, "SHOUT\n")
    slow = volar(volantd, "vms", "exec", VM, "--timeout", "0.5", "--", "sleep", "30")
    assert slow.returncode == 124 and "timed out after 0.5 s" in slow.stderr
    killed = volar(volantd, "vms", "exec", VM, "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM
    assert volar(volantd, "vms", "exec", VM, "--env", "NOEQUALS", "--", "true").returncode == 2
    missing = volar(volantd, "vms", "exec", VM, "--", "/no/such/program")
    one_line_error(missing, "/no/such/program")
    one_line_error(volar(volantd, "vms", "exec", "nope", "--", "true"), 'vm "nope" not found')


def test_cp(volantd: Volantd, waited: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000 + b"\xff\xfe not utf-8"
    local = tmp_path / "tool.bin"
    local.write_bytes(data)
    local.chmod(0o750)
    up = volar(volantd, "vms", "cp", str(local), f"{VM}:/tmp/tool.bin")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"copied {len(data)} bytes to {VM}:/tmp/tool.bin"
    back = tmp_path / "back"
    back.mkdir()
    down = volar(volantd, "vms", "cp", f"{VM}:/tmp/tool.bin", str(back))  # into the folder
    assert down.returncode == 0, down.stderr
    assert (back / "tool.bin").read_bytes() == data
    assert (back / "tool.bin").stat().st_mode & 0o7777 == 0o750
    into_dir = volar(volantd, "vms", "cp", str(local), f"{VM}:/tmp")  # a guest folder
    assert into_dir.returncode == 0, into_dir.stderr
    mode = volar(volantd, "vms", "exec", VM, "--", "stat", "-c", "%a %s", "/tmp/tool.bin")
    assert mode.stdout.strip() == f"750 {len(data)}"

    piped = volar(volantd, "vms", "cp", "-", f"{VM}:/tmp/piped", input=b"\x00from stdin\n")
    assert piped.returncode == 0, piped.stderr
    out = volar(volantd, "vms", "cp", f"{VM}:/tmp/piped", "-", input=b"")
    assert (out.returncode, out.stdout) == (0, b"\x00from stdin\n")

    one_line_error(
        volar(volantd, "vms", "cp", f"{VM}:/tmp/absent", str(tmp_path)), "no such file: /tmp/absent"
    )
    one_line_error(
        volar(volantd, "vms", "cp", str(tmp_path / "absent"), f"{VM}:/tmp/x"), "no such file"
    )
    one_line_error(volar(volantd, "vms", "cp", str(tmp_path), f"{VM}:/tmp/x"), "is a directory")
    neither = volar(volantd, "vms", "cp", str(local), str(tmp_path / "copy"))
    assert neither.returncode == 2 and "must be a VM path" in neither.stderr
    both = volar(volantd, "vms", "cp", f"{VM}:/a", f"{IDLE}:/b")
    assert both.returncode == 2 and "one side must be a local path" in both.stderr
    relative = volar(volantd, "vms", "cp", str(local), f"{VM}:tmp/x")
    assert relative.returncode == 2 and "must be absolute" in relative.stderr
    one_line_error(volar(volantd, "vms", "cp", str(local), "nope:/tmp/x"), 'vm "nope" not found')


def test_operations_and_call(volantd: Volantd, waited: subprocess.CompletedProcess[str]) -> None:
    listed = volar(volantd, "vms", "operations", VM, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(op["operation_id"], op["method"], op["path"]) for op in json.loads(listed.stdout)] == [
        ("GET:/{page}", "GET", "/{page}"),
        ("getIndex", "GET", "/"),
        ("getMissing", "GET", "/missing.html"),
        ("getStatus", "GET", "/status.json"),
    ]
    table = volar(volantd, "vms", "operations", VM).stdout.splitlines()
    assert table[0].split() == ["OPERATION", "ID", "METHOD", "PATH", "SUMMARY"]
    assert table[2].split()[:3] == ["getIndex", "GET", "/"]

    page = volar(volantd, "vms", "call", VM, "GETINDEX")  # ids match case-insensitively
    assert page.returncode == 0 and "Hello from a Volant microVM" in page.stdout, page.stderr
    status = volar(volantd, "vms", "call", VM, "getStatus", "--query", "verbose=1")
    assert json.loads(status.stdout) == {"ok": True, "served_by": "busybox"}, status.stderr
    by_path = volar(volantd, "vms", "call", VM, "GET:/{page}", "--param", "page=status.json")
    assert by_path.returncode == 0 and json.loads(by_path.stdout)["ok"] is True
    missing = volar(volantd, "vms", "call", VM, "getMissing")
    assert missing.returncode == 1 and missing.stderr.strip() == "HTTP 404"
    unfilled = volar(volantd, "vms", "call", VM, "GET:/{page}")
    assert unfilled.returncode == 2 and "--param page=VALUE" in unfilled.stderr
    bad_body = volar(volantd, "vms", "call", VM, "getIndex", "--body", "{not json")
    assert bad_body.returncode == 2 and "--body is not valid JSON" in bad_body.stderr
    one_line_error(volar(volantd, "vms", "call", VM, "deleteEverything"), "no operation")
    # The idle VM's plugin has no OpenAPI document in its manifest (and no live workload).
    one_line_error(volar(volantd, "vms", "operations", IDLE), "publishes no OpenAPI document")
    one_line_error(volar(volantd, "vms", "call", IDLE, "getIndex"), "publishes no OpenAPI")
    one_line_error(volar(volantd, "vms", "operations", "nope"), 'vm "nope" not found')
    one_line_error(volar(volantd, "vms", "call", "nope", "getIndex"), 'vm "nope" not found')


def test_config(volantd: Volantd, tmp_path: Path) -> None:
    first = json.loads(volar(volantd, "vms", "config", "get", IDLE, "-o", "json").stdout)
    assert first["config"]["plugin"] == "busybox-httpd"
    shown = volar(volantd, "vms", "config", "get", IDLE)
    assert shown.stdout.startswith(f"# vm {IDLE}: config version {first['version']},")
    assert yaml.safe_load(shown.stdout)["plugin"] == "busybox-httpd"

    patch = tmp_path / "patch.yaml"
    patch.write_text("metadata:\n  team: web\n")
    changed = volar(
        volantd, "vms", "config", "set", IDLE, "--file", str(patch),
        "--set", "metadata.tier=2", "--set", "kernel_cmdline=quiet",
    )  # fmt: skip
    version = first["version"] + 1
    assert changed.returncode == 0, changed.stderr
    assert f"config updated to version {version}" in changed.stdout
    current = yaml.safe_load(volar(volantd, "vms", "config", "get", IDLE, "-o", "yaml").stdout)
    assert current["config"]["metadata"] == {"team": "web", "tier": 2}
    assert current["config"]["kernel_cmdline"] == "quiet"

    whole = tmp_path / "whole.json"  # `config get -o json` fed back as it is
    whole.write_text(volar(volantd, "vms", "config", "get", IDLE, "-o", "json").stdout)
    again = volar(volantd, "vms", "config", "set", IDLE, "--file", str(whole), "-o", "json")
    assert json.loads(again.stdout)["version"] == version + 1, again.stderr

    history = json.loads(volar(volantd, "vms", "config", "history", IDLE, "-o", "json").stdout)
    assert [entry["version"] for entry in history] == [version + 1, version, first["version"]]
    limited = volar(volantd, "vms", "config", "history", IDLE, "--limit", "1").stdout.splitlines()
    assert limited[0].split() == ["VERSION", "UPDATED", "CPUS", "MEMORY"]
    assert len(limited) == 2 and limited[1].split()[0] == str(version + 1)

    assert volar(volantd, "vms", "config", "set", IDLE).returncode == 2
    assert volar(volantd, "vms", "config", "set", IDLE, "--set", "novalue").returncode == 2
    one_line_error(
        volar(volantd, "vms", "config", "set", IDLE, "--set", "resources.cpu_cores=0"),
        "cpu_cores", "(HTTP 422)",
    )  # fmt: skip
    patch.write_text("- a list\n")
    one_line_error(volar(volantd, "vms", "config", "set", IDLE, "--file", str(patch)), "object")
    for command in ("get", "history"):
        one_line_error(volar(volantd, "vms", "config", command, "nope"), 'vm "nope" not found')
    one_line_error(
        volar(volantd, "vms", "config", "set", "nope", "--set", "metadata.a=1"),
        'vm "nope" not found',
    )


def test_scale(volantd: Volantd, waited: subprocess.CompletedProcess[str]) -> None:
    idle = volar(volantd, "vms", "scale", IDLE, "--cpus", "2")
    assert idle.returncode == 0, idle.stderr
    assert "2 vCPUs, 256 MiB" in idle.stdout and "applies when it starts" in idle.stdout
    assert json.loads(volar(volantd, "vms", "get", IDLE, "-o", "json").stdout)["cpu_cores"] == 2

    scaled = volar(volantd, "vms", "scale", VM, "--cpus", "2", "--memory", "320", "--restart",
                   timeout=200)  # fmt: skip
    assert scaled.returncode == 0, scaled.stderr
    assert "2 vCPUs, 320 MiB" in scaled.stdout and "restarted" in scaled.stdout
    vm = json.loads(volar(volantd, "vms", "get", VM, "-o", "json").stdout)
    assert (vm["status"], vm["cpu_cores"], vm["memory_mb"]) == ("running", 2, 320)
    cpus = volar(volantd, "vms", "exec", VM, "--", "grep", "-c", "^processor", "/proc/cpuinfo")
    assert cpus.stdout.strip() == "2", cpus.stderr

    usage = volar(volantd, "vms", "scale", VM)
    assert usage.returncode == 2 and "--cpus and/or --memory" in usage.stderr
    assert volar(volantd, "vms", "scale", VM, "--cpus", "0").returncode == 2
    one_line_error(volar(volantd, "vms", "scale", "nope", "--cpus", "1"), 'vm "nope" not found')


def test_wait_for_deleted(volantd: Volantd) -> None:
    waiter = subprocess.Popen(
        [str(VOLAR), "--api", volantd.url, "vms", "wait", IDLE, "--for", "deleted"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with volantd.client() as client:
            assert client.delete(f"/api/v1/vms/{IDLE}").status_code == 204
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err
        assert out.strip() == f"vm {IDLE} is deleted"
    finally:
        waiter.kill()
