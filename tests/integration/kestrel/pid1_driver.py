"""Runs kestrel as PID 1 of its own PID namespace and reports what it did, as JSON.

Started by test_kestrel_pid1.py inside fresh network, UTS and mount namespaces:

    unshare --net --uts --mount --propagation private python pid1_driver.py PYZ VM_JSON WORKDIR

It gives the namespace a veth ``eth0`` (with the wrong MAC), bind-mounts a scratch file over
/etc/resolv.conf, then starts ``unshare --pid --fork --mount-proc python3 -s -S -B PYZ`` with
a pseudo-terminal as its console. Nothing here touches the host's network or files.
"""

from __future__ import annotations

import http.client
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

DEADLINE_S = 60.0


class Console:
    """The master side of kestrel's console terminal."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.device = os.ttyname(self.slave)
        self.text = ""

    def read_until(self, needle: str, timeout: float = DEADLINE_S) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{needle!r} not seen on the console:\n{self.text}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # every writer closed the terminal
                    time.sleep(0.05)
        return self.text

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line.strip().removeprefix("volant-event "))
            for line in self.text.splitlines()
            if line.startswith("volant-event ")
        ]


def api(method: str, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
    connection.request(method, path)
    body = connection.getresponse().read()
    connection.close()
    return json.loads(body)


def run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def wait(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(what)


def main() -> None:
    pyz, vm_json, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"])
    run(["ip", "link", "set", "eth0", "address", "02:99:99:99:99:99"])
    run(["ip", "link", "set", "peer0", "up"])
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")
    run(["mount", "--bind", str(resolv), "/etc/resolv.conf"])

    console = Console()
    agent = subprocess.Popen(
        [
            *("unshare", "--pid", "--fork", "--mount-proc"),
            *("/usr/bin/python3", "-s", "-S", "-B", pyz),
            *("--config", vm_json, "--console", console.device),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "VOLANT_INIT_STARTED_MS": "1234"},  # as csrc/init.c may pass it
    )
    report: dict[str, Any] = {}
    try:
        console.read_until('"event":"agent_ready"')
        console.read_until('"event":"workload_healthy"')
        info = api("GET", "/v1/info")
        report["info"] = info
        report["hostname"] = socket.gethostname()
        report["addresses"] = json.loads(run(["ip", "-j", "addr", "show", "eth0"]))
        report["routes"] = json.loads(run(["ip", "-j", "route", "show", "default"]))
        report["resolv_conf"] = resolv.read_text()

        console.type("echo shell-$((6 * 7)) on $(tty)")
        console.read_until("shell-42 on /dev/pts/")
        report["shell_answered"] = True

        kestrel = psutil.Process(agent.pid).children()[0]  # PID 1 inside, this pid outside

        def zombies() -> list[int]:
            found = []
            for child in kestrel.children(recursive=True):
                try:
                    if child.status() == psutil.STATUS_ZOMBIE:
                        found.append(child.pid)
                except psutil.NoSuchProcess:
                    pass
            return found

        report["orphans_reaped"] = wait(
            lambda: api("GET", "/v1/info")["agent"]["orphans_reaped"], "an orphan to be reaped"
        )
        wait(lambda: not zombies(), "no zombie left under kestrel")
        report["zombies"] = zombies()

        assert api("POST", "/v1/shutdown") == {"status": "shutting down"}
        report["unshare_status"] = agent.wait(DEADLINE_S)
        console.read_until("syncing and powering off")
        report["events"] = [event["event"] for event in console.events()]
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        report["console"] = console.text
    print(json.dumps(report))


if __name__ == "__main__":
    main()
