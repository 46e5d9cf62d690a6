"""`volar vms wait`: block until a VM reaches a state, woken by volantd's event stream."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Annotated, Any

import typer

from volar.client import APIError, VolarError
from volar.commands.vms import vms_app
from volar.context import STREAMING, OutputOption, client, fail, interruptible, usage_error, vm_path
from volar.output import Format, emit

WAIT_STATES = ("running", "healthy", "stopped", "deleted")
WAIT_POLL_S = 2.0
"""How often ``wait`` re-reads the VM when no event arrives (events only wake it sooner)."""


@vms_app.command("wait")
def vms_wait(
    name: str,
    state: Annotated[
        str, typer.Option("--for", help="running, healthy (workload), stopped or deleted")
    ] = "running",
    timeout: Annotated[float, typer.Option(min=0, help="give up after this many seconds")] = 300,
    output: OutputOption = Format.TABLE,
) -> None:
    """Block until the VM is running, healthy, stopped or deleted.

    healthy: its workload passed its health check; stopped: also a VM never started. Exits 1
    on timeout, or if the VM crashes meanwhile.
    """
    if state not in WAIT_STATES:
        usage_error(f"--for must be one of {', '.join(WAIT_STATES)} (got {state!r})")
    deadline = time.monotonic() + timeout
    wake = threading.Event()
    threading.Thread(target=_watch_events, args=(name, wake), daemon=True).start()
    api = client(timeout=30)
    has_workload: bool | None = None
    with interruptible(130):
        while True:
            wake.clear()  # before reading, so an event during the read wakes the next wait
            try:
                vm = api.get(vm_path(name))
            except APIError as error:
                if error.status == 404 and state == "deleted":
                    _report_wait(name, {"name": name, "status": "deleted"}, state, output)
                    return
                raise
            status = vm["status"]
            if status == "crashed" and state != "deleted":
                fail(f"vm {name} crashed: {vm.get('last_error') or 'no details'}")
            if state == "healthy" and status == "running" and has_workload is None:
                config = api.get(vm_path(name, "/config"))["config"]
                has_workload = (config.get("manifest") or {}).get("workload") is not None
            if _reached(vm, state, has_workload):
                _report_wait(name, vm, state, output)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                fail(f"vm {name} is not {state} after {timeout:g} s (it is {status})")
            wake.wait(min(WAIT_POLL_S, remaining))


def _reached(vm: dict[str, Any], state: str, has_workload: bool | None) -> bool:
    status = vm["status"]
    if state == "running":
        return bool(status == "running")
    if state == "healthy":
        steps = (vm.get("boot") or {}).get("steps") or {}
        return status == "running" and ("workload_healthy" in steps or has_workload is False)
    if state == "stopped":
        return status in ("stopped", "pending")
    return False  # deleted: it still exists


def _watch_events(name: str, wake: threading.Event) -> None:
    """Set ``wake`` at every event of the VM (the waiting loop then re-reads the VM); if the
    stream fails, the loop keeps polling."""
    events = client().stream("GET", "/api/v1/events/vms", params={"vm": name}, timeout=STREAMING)
    with contextlib.suppress(VolarError), events as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                wake.set()


def _report_wait(name: str, vm: dict[str, Any], state: str, output: Format) -> None:
    if output is Format.TABLE:
        typer.echo(f"vm {name} is {state}")
    else:
        emit(vm, output)
