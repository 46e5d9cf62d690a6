"""The per-VM monitor: the parent of one VMM process (the role conmon plays for containers).

It is VMM-agnostic and kept out of `volantd.hypervisors` so that starting it imports nothing
but the standard library (it sits on every VM's boot path).

A driver starts `python -m volantd.vmm_monitor RUN_DIR -- VMM ARGS...` in a session
of its own, with the read end of a "lifeline" pipe as standard input. The monitor

- spawns the VMM in RUN_DIR with PR_SET_PDEATHSIG=SIGKILL, so a VMM never outlives it;
- kills the VMM when the lifeline reaches end-of-file before the driver wrote `detach`:
  the process that started the VM died (say mid-boot) before it could record the VM;
- after `detach`, lets the VM outlive the daemon, so a restarted daemon can attach to it;
- kills the VMM on SIGTERM, SIGINT or SIGHUP;
- records how the VMM ended in `exit.json` and exits with it.

With ``--serial-socket NAME`` (a VMM that serves its serial port on the unix socket NAME in
RUN_DIR, as Cloud Hypervisor does) the monitor is that socket's one client: it appends all the
guest prints to `serial.log` and serves `console.sock` for interactive clients, which is what
QEMU's own chardev does for the QEMU driver. `console.sock` appears once the monitor is
connected, so a driver that waits for it before booting the guest loses no output.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
VMM_PID_FILE = "vmm.pid"
MONITOR_PID_FILE = "monitor.pid"
EXIT_FILE = "exit.json"
VMM_LOG_FILE = "vmm.log"
SERIAL_LOG = "serial.log"
CONSOLE_SOCKET = "console.sock"
CONNECT_POLL_S = 0.01
SLOW_CONNECT_POLL_S = 1.0
FAST_CONNECT_FOR_S = 30.0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the monitor died before prctl took effect
        os._exit(1)


class SerialRelay:
    """The client of a VMM's serial socket: guest output to `serial.log` and to whoever is
    attached to `console.sock` (one client at a time; a new one replaces the last), their
    input to the guest."""

    def __init__(self, run_dir: Path, vmm_socket: str, selector: selectors.BaseSelector) -> None:
        self.vmm_path = run_dir / vmm_socket
        self.console_path = run_dir / CONSOLE_SOCKET
        self.selector = selector
        self.log = open(run_dir / SERIAL_LOG, "ab")  # noqa: SIM115 - closed by close()
        self.vmm: socket.socket | None = None
        self.listener: socket.socket | None = None
        self.client: socket.socket | None = None
        self.started = time.monotonic()

    def poll_interval(self) -> float | None:
        """How long the monitor may block: not at all long while not connected yet."""
        if self.vmm is not None:
            return None
        fast = time.monotonic() - self.started < FAST_CONNECT_FOR_S
        return CONNECT_POLL_S if fast else SLOW_CONNECT_POLL_S

    def connect(self) -> None:
        """Connect to the VMM's serial socket if it is there and we are not yet."""
        if self.vmm is not None:
            return
        vmm = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            vmm.connect(str(self.vmm_path))
        except OSError:
            vmm.close()
            return
        vmm.setblocking(False)
        self.vmm = vmm
        self.selector.register(vmm, selectors.EVENT_READ, "serial")
        if self.listener is None:
            self.console_path.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(str(self.console_path))
                listener.listen(4)
            except OSError as error:  # serial.log still gets everything
                print(f"no console socket {self.console_path}: {error}", file=sys.stderr)
                listener.close()
                return
            listener.setblocking(False)
            self.listener = listener
            self.selector.register(listener, selectors.EVENT_READ, "console")

    def handle(self, what: str) -> None:
        if what == "serial":
            self._from_guest()
        elif what == "console":
            self._accept()
        elif what == "client":
            self._from_client()

    def _from_guest(self) -> None:
        assert self.vmm is not None
        try:
            data = self.vmm.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the VMM closed its end: try again later (it may serve a new one)
            self._drop("vmm")
            return
        self.log.write(data)
        self.log.flush()
        if self.client is not None:
            try:
                self.client.send(data)
            except BlockingIOError:
                pass  # a client too slow to read loses output; serial.log has all of it
            except OSError:
                self._drop("client")

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        self._drop("client")
        client.setblocking(False)
        self.client = client
        self.selector.register(client, selectors.EVENT_READ, "client")

    def _from_client(self) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop("client")
            return
        if self.vmm is not None:
            self.vmm.settimeout(1.0)
            with contextlib.suppress(OSError):
                self.vmm.sendall(data)
            self.vmm.setblocking(False)

    def _drop(self, which: str) -> None:
        sock = self.vmm if which == "vmm" else self.client
        if sock is None:
            return
        self.selector.unregister(sock)
        sock.close()
        if which == "vmm":
            self.vmm = None
        else:
            self.client = None

    def drain(self) -> None:
        """After the VMM exited: keep what it printed last."""
        while self.vmm is not None:
            before = self.log.tell()
            self._from_guest()
            if self.vmm is not None and self.log.tell() == before:
                break

    def close(self) -> None:
        for which in ("vmm", "client"):
            self._drop(which)
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
        self.log.close()


def run(
    run_dir: Path, command: list[str], lifeline_fd: int, serial_socket: str | None = None
) -> int:
    """Run `command` as the VMM of `run_dir`; returns the VMM's exit code."""
    reason = "exited"
    vmm: subprocess.Popen[bytes] | None = None

    def kill_vmm(why: str) -> None:
        nonlocal reason
        reason = why
        if vmm is not None and vmm.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(vmm.pid, signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, _frame: kill_vmm(f"signal {signum}"))

    _write_atomic(run_dir / MONITOR_PID_FILE, f"{os.getpid()}\n")
    (run_dir / EXIT_FILE).unlink(missing_ok=True)
    me = os.getpid()
    with open(run_dir / VMM_LOG_FILE, "ab") as log:
        vmm = subprocess.Popen(
            command,
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _die_with_parent(me),
        )
    _write_atomic(run_dir / VMM_PID_FILE, f"{vmm.pid}\n")

    selector = selectors.DefaultSelector()
    relay = SerialRelay(run_dir, serial_socket, selector) if serial_socket else None
    pidfd = os.pidfd_open(vmm.pid)
    selector.register(pidfd, selectors.EVENT_READ, "vmm")
    selector.register(lifeline_fd, selectors.EVENT_READ, "lifeline")
    while vmm.poll() is None:
        if relay is not None:
            relay.connect()
        timeout = relay.poll_interval() if relay is not None else None
        for key, _ in selector.select(timeout):
            if key.data == "lifeline":
                message = os.read(lifeline_fd, 64)
                if b"detach" in message:
                    selector.unregister(lifeline_fd)
                    os.close(lifeline_fd)
                elif not message:
                    selector.unregister(lifeline_fd)
                    kill_vmm("owner exited before detaching the VM")
            elif key.data != "vmm" and relay is not None:
                relay.handle(key.data)
    returncode = vmm.wait()
    if relay is not None:
        relay.drain()
        relay.close()
    record = {
        "returncode": returncode,
        "signal": -returncode if returncode < 0 else None,
        "reason": reason,
        "ended_at": time.time(),
    }
    _write_atomic(run_dir / EXIT_FILE, json.dumps(record) + "\n")
    return returncode


USAGE = "usage: python -m volantd.vmm_monitor RUN_DIR [--serial-socket NAME] -- VMM ARGS..."


def main(argv: list[str]) -> int:
    separator = argv.index("--") if "--" in argv else -1
    head, command = argv[:separator], argv[separator + 1 :]
    options_ok = len(head) == 1 or (len(head) == 3 and head[1] == "--serial-socket")
    if separator < 0 or not command or not options_ok:
        print(USAGE, file=sys.stderr)
        return 2
    serial_socket = head[2] if len(head) == 3 else None
    returncode = run(Path(head[0]), command, sys.stdin.fileno(), serial_socket)
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
