"""`volar vms console` against a real volantd and a real guest, driven through a pseudo-terminal.

One VM boots for the whole module; the last test restarts volantd on a unix socket (the VM is
adopted) to attach through it as well.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.guest import free_port, wait_for
from support.volantd import VOLANTD, Volantd, running_volantd, volantd_env

pytestmark = pytest.mark.vm

VOLAR = Path(sys.executable).parent / "volar"
API_KEY = "console-test-key-0123456789"
VM = "con-1"


@pytest.fixture(scope="module")
def volantd(home: Path, daemon_env: dict[str, str], example_manifest: Path) -> Iterator[Volantd]:
    """volantd with an API key, the example plugin, and one running VM (deleted at the end)."""
    with running_volantd(home, env=daemon_env, api_key=API_KEY) as daemon:
        with daemon.client(timeout=180) as client:
            installed = client.post("/api/v1/plugins", json={"source": str(example_manifest)})
            assert installed.status_code == 201, installed.text
            created = client.post(
                "/api/v1/vms?wait=healthy", json={"name": VM, "plugin": "busybox-httpd"}
            )
            assert created.status_code == 201, created.text
        yield daemon
        if daemon.process.poll() is None:
            with daemon.client(timeout=60) as client:
                client.delete(f"/api/v1/vms/{VM}")


def volar(api: str, *args: str, api_key: str = API_KEY) -> list[str]:
    return [str(VOLAR), "--api", api, "--api-key", api_key, *args]


@dataclass
class Session:
    """`volar` on the slave side of a pseudo-terminal; the test types on the master side."""

    process: subprocess.Popen[bytes]
    master: int
    slave: int
    seen: bytes = b""

    def expect(self, wanted: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {wanted!r}; the terminal showed:\n{self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # EIO: every slave fd closed
                    time.sleep(0.05)
        return self.seen

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def lflag(self) -> int:
        return int(termios.tcgetattr(self.slave)[3])

    def wait_raw(self) -> None:
        wait_for(lambda: not self.lflag() & termios.ECHO, 10, "volar to put the terminal raw")

    def finish(self, timeout: float = 15) -> int:
        """Wait for volar to exit; then read what it printed last."""
        code = self.process.wait(timeout)
        while select.select([self.master], [], [], 0.2)[0]:
            self.seen += os.read(self.master, 4096)
        return code


@contextlib.contextmanager
def in_terminal(args: list[str]) -> Iterator[Session]:
    master, slave = os.openpty()
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave)
    session = Session(process, master, slave)
    try:
        yield session
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        os.close(slave)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_server_that_is_down_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        volar(url, "vms", "console", VM), capture_output=True, text=True, timeout=60
    )
    assert f"cannot reach volantd at {url}" in one_line_error(result)


def test_unknown_vm_bad_key_and_stopped_vm_are_one_line_errors(volantd: Volantd) -> None:
    def console(name: str, *extra: str, api_key: str = API_KEY) -> str:
        args = volar(volantd.url, "vms", "console", name, *extra, api_key=api_key)
        return one_line_error(subprocess.run(args, capture_output=True, text=True, timeout=60))

    assert 'vm "nope" not found' in console("nope")
    assert "API key" in console(VM, api_key="wrong-key-0123456789")
    with volantd.client() as client:
        recorded = client.post(
            "/api/v1/vms?start=false", json={"name": "idle", "plugin": "busybox-httpd"}
        )
        assert recorded.status_code == 201, recorded.text
        try:
            assert 'vm "idle" is pending' in console("idle")
        finally:
            client.delete("/api/v1/vms/idle")
    bad = subprocess.run(
        volar(volantd.url, "vms", "console", VM, "--escape", "^1"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "--escape" in bad.stderr


def test_an_interactive_session_reaches_the_guest_shell_and_detaches(volantd: Volantd) -> None:
    """Keys reach the guest raw (Ctrl-C too); a second session is refused; Ctrl-] detaches."""
    with in_terminal(volar(volantd.url, "vms", "console", VM)) as term:
        before = termios.tcgetattr(term.slave)
        term.expect(f"Connected to {VM}'s console. Detach with Ctrl-] .".encode())
        term.wait_raw()
        term.type(b"\r")
        term.type(b"echo con$((6*7))sole\r")
        term.expect(b"con42sole")
        second = subprocess.run(
            volar(volantd.url, "vms", "console", VM), capture_output=True, text=True, timeout=60
        )
        assert one_line_error(second) == (
            f"error: volantd refused the console: the console of vm '{VM}' is already in use"
        )
        term.type(b"sleep 30\r")
        time.sleep(1)
        term.type(b"\x03")  # Ctrl-C reaches the guest (raw mode), not volar
        term.type(b"echo after$((1+1))int\r")
        term.expect(b"after2int", timeout=20)
        assert term.process.poll() is None
        term.type(b"\x1d")
        term.expect(b"Detached.")
        assert term.finish() == 0
        assert termios.tcgetattr(term.slave) == before


def test_sigterm_and_a_custom_escape_restore_the_terminal(volantd: Volantd) -> None:
    args = volar(volantd.url, "vms", "console", VM, "--escape", "ctrl-p,ctrl-q")
    with in_terminal(args) as term:
        before = termios.tcgetattr(term.slave)
        term.expect(b"Detach with Ctrl-P Ctrl-Q .")
        term.wait_raw()
        term.type(b"\x1d\x10")  # Ctrl-] is an ordinary key here; Ctrl-P is held back
        time.sleep(0.5)
        assert term.process.poll() is None
        term.process.send_signal(signal.SIGTERM)
        assert term.finish() == 128 + signal.SIGTERM
        assert termios.tcgetattr(term.slave) == before
        assert b"SIGTERM: detached." in term.seen


def test_piped_input_runs_and_its_output_is_printed(volantd: Volantd) -> None:
    result = subprocess.run(
        volar(volantd.url, "vms", "console", VM, "--linger", "3"),
        input=b"\necho pipe$((6*7))d\n",
        capture_output=True,
        timeout=90,
    )
    assert result.returncode == 0, result
    assert b"pipe42d" in result.stdout and result.stderr == b""


def test_a_session_through_volantds_unix_socket(
    volantd: Volantd, home: Path, daemon_env: dict[str, str]
) -> None:
    """Last: volantd is restarted on a unix socket (it adopts the VM and stops it on exit)."""
    volantd.stop(signal.SIGKILL)
    socket_path = home.parent / "api.sock"
    env = volantd_env(home, {**daemon_env, "VOLANT_API_KEY": API_KEY})
    log = home / "volantd-unix.log"
    with log.open("ab") as output:
        daemon = subprocess.Popen(
            [str(VOLANTD), "serve", "--socket", str(socket_path), "--stop-vms-on-exit"],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    http = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)),
        base_url="http://volantd",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )

    def answers() -> bool:
        assert daemon.poll() is None, log.read_text(errors="replace")
        try:
            return http.get(f"/api/v1/vms/{VM}").json()["status"] == "running"
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, 30, "volantd on its unix socket to adopt the VM")
        with in_terminal(volar(f"unix:{socket_path}", "vms", "console", VM)) as term:
            before = termios.tcgetattr(term.slave)
            term.expect(b"Detach with Ctrl-] .")
            term.wait_raw()
            term.type(b"\recho unix$((6*7))sock\r")
            term.expect(b"unix42sock")
            term.type(b"\x1d")
            term.expect(b"Detached.")
            assert term.finish() == 0
            assert termios.tcgetattr(term.slave) == before
        assert http.delete(f"/api/v1/vms/{VM}").status_code == 204
    finally:
        http.close()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
