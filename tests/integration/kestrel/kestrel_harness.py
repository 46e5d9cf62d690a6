"""Helpers for kestrel's integration tests: vm.json, the test workload, a kestrel process."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from pluginspec import (
    GuestBoot,
    GuestNetwork,
    GuestWorkload,
    VMContract,
    VMIdentity,
    parse_manifest,
)
from support.guest import wait_for

HERE = Path(__file__).resolve().parent
WORKLOAD_APP = HERE / "workload_app.py"
GUEST_PYTHON = "/usr/bin/python3"
START_TIMEOUT = 30.0


def write_vm_json(
    path: Path,
    *,
    workload: dict[str, Any] | None,
    health_check: dict[str, Any] | None = None,
    console_shell: bool = False,
    network: GuestNetwork | None = None,
) -> Path:
    """A real contract-1 vm.json built with pluginspec, as volantd writes it."""
    manifest = parse_manifest(
        {
            "name": "kestrel-test",
            "version": "1.0",
            "initramfs": {"url": "/var/lib/volant/test.cpio.gz"},
            "workload": workload,
            "health_check": health_check,
        }
    )
    contract = VMContract(
        vm=VMIdentity(name="kestrel-test", id="42"),
        hostname="kestrel-test",
        manifest=manifest,
        workload=GuestWorkload.from_manifest(manifest),
        network=network
        or GuestNetwork(
            mode="user",
            mac="02:00:00:00:00:01",
            address="10.0.2.15",
            prefix=24,
            gateway="10.0.2.2",
            dns=["10.0.2.3"],
        ),
        boot=GuestBoot(strategy="initramfs"),
        console_shell=console_shell,
        boot_epoch_ns=123,
    )
    path.write_text(contract.to_json())
    return path


def http_workload(port: int, mark: Path, **extra: Any) -> dict[str, Any]:
    """The test HTTP app as a workload; ``mark`` tags its processes for the leak check."""
    return {
        "type": "http",
        "entrypoint": [sys.executable, str(WORKLOAD_APP), str(port)],
        "base_url": f"http://127.0.0.1:{port}",
        "env": {"KESTREL_TEST_MARK": str(mark)},
        **extra,
    }


def marked_processes(mark: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries ``mark``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get("KESTREL_TEST_MARK") == str(mark):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Kestrel:
    """One kestrel process: its console events and its API."""

    def __init__(
        self, command: list[str], config: Path, workdir: Path, args: list[str] | None = None
    ) -> None:
        self.console = workdir / "console.log"
        self.output = workdir / "kestrel.out"
        self.command = [
            *command,
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--console",
            str(self.console),
            "--stop-timeout",
            "5",
            *(args or []),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> Kestrel:
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT)
        ready = self.wait_event("agent_ready")
        self.port = int(ready["listen"][0].rsplit(":", 1)[1])
        return self

    def events(self) -> list[dict[str, Any]]:
        if not self.console.exists():
            return []
        lines = self.console.read_text().splitlines()
        return [
            json.loads(ln[len("volant-event ") :]) for ln in lines if ln.startswith("volant-event ")
        ]

    def wait_event(
        self, name: str, count: int = 1, timeout: float = START_TIMEOUT
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            matching = [e for e in self.events() if e["event"] == name]
            if len(matching) >= count:
                return matching[count - 1]
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"kestrel exited ({self.process.returncode}) before {name}:\n"
                    + self.output.read_text(errors="replace")
                    + self.console.read_text(errors="replace")
                )
            return None

        return wait_for(found, timeout, f"console event {name} #{count}", interval=0.02)

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        connection = self.connection()
        try:
            data = body.encode() if isinstance(body, str) else body
            connection.request(method, path, body=data, headers=headers or {})
            response = connection.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def get_json(self, path: str) -> Any:
        reply = self.request("GET", path)
        assert reply.status == 200, reply.body
        return reply.json()

    def info(self) -> dict[str, Any]:
        return self.get_json("/v1/info")  # type: ignore[no-any-return]

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def launcher_command(kind: str, zipapp: Path | None) -> list[str]:
    if kind == "module":
        return [sys.executable, "-m", "kestrel"]
    assert zipapp is not None
    return [GUEST_PYTHON, "-s", "-S", "-B", str(zipapp)]


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = START_TIMEOUT) -> Any:
    """Poll ``predicate`` until truthy (bounded wait; no timing assertions)."""
    return wait_for(predicate, timeout, what, interval=0.02)
