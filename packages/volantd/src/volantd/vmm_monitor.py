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
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
VMM_PID_FILE = "vmm.pid"
MONITOR_PID_FILE = "monitor.pid"
EXIT_FILE = "exit.json"
VMM_LOG_FILE = "vmm.log"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the monitor died before prctl took effect
        os._exit(1)


def run(run_dir: Path, command: list[str], lifeline_fd: int) -> int:
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
    pidfd = os.pidfd_open(vmm.pid)
    selector.register(pidfd, selectors.EVENT_READ, "vmm")
    selector.register(lifeline_fd, selectors.EVENT_READ, "lifeline")
    while vmm.poll() is None:
        for key, _ in selector.select():
            if key.data == "lifeline":
                message = os.read(lifeline_fd, 64)
                if b"detach" in message:
                    selector.unregister(lifeline_fd)
                    os.close(lifeline_fd)
                elif not message:
                    selector.unregister(lifeline_fd)
                    kill_vmm("owner exited before detaching the VM")
    returncode = vmm.wait()
    record = {
        "returncode": returncode,
        "signal": -returncode if returncode < 0 else None,
        "reason": reason,
        "ended_at": time.time(),
    }
    _write_atomic(run_dir / EXIT_FILE, json.dumps(record) + "\n")
    return returncode


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m volantd.vmm_monitor RUN_DIR -- VMM ARGS...", file=sys.stderr)
        return 2
    returncode = run(Path(argv[0]), argv[2:], sys.stdin.fileno())
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
