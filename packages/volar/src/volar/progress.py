"""Boot progress: the phases of a VM's boot, printed as they happen, and how to reach it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from volar.client import APIError, Client, VolarError

POLL_INTERVAL_S = 0.25
PHASES = (
    ("vmm_spawned", "hypervisor started"),
    ("init_started", "guest init started"),
    ("root_mounted", "root disk mounted"),
    ("workload_started", "workload started"),
    ("agent_ready", "agent ready"),
    ("workload_healthy", "workload healthy"),
)
"""Boot phases in the order they are shown (the guest may report the last two either way)."""


def reached_phases(vm: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    """(phase, label, host milliseconds since the VMM was spawned) for each phase ``vm`` has
    reached, in display order."""
    boot = vm.get("boot") or {}
    steps = boot.get("steps") or {}
    reached: list[tuple[str, str, int | None]] = []
    for phase, label in PHASES:
        if phase == "vmm_spawned" and boot.get("vmm_spawned_ms") is not None:
            reached.append((phase, label, boot["vmm_spawned_ms"]))
        elif phase in steps:
            reached.append((phase, label, steps[phase].get("host_ms")))
    return reached


class BootProgress:
    """Prints each boot phase of VM ``name`` once, while the caller waits for the boot.

    A background thread polls the VM (it may not exist yet when watching starts); call
    :meth:`finish` with the final VM record to print what the last poll missed.
    """

    def __init__(self, client: Client, name: str, echo: Callable[[str], None]) -> None:
        self._client, self._name, self._echo = client, name, echo
        self._shown: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> BootProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def finish(self, vm: dict[str, Any]) -> None:
        """Stop polling and show the phases in ``vm`` that were not shown yet."""
        self._done.set()
        self._thread.join()
        self._show(vm)

    def _poll(self) -> None:
        while not self._done.wait(POLL_INTERVAL_S):
            try:
                vm = self._client.get(f"/api/v1/vms/{self._name}")
            except APIError as error:
                if error.status == 404:
                    continue  # not recorded yet
                return
            except VolarError:
                return  # the main request reports connection problems
            self._show(vm)

    def _show(self, vm: dict[str, Any]) -> None:
        with self._lock:
            for phase, label, host_ms in reached_phases(vm):
                if phase not in self._shown:
                    self._shown.add(phase)
                    at = f"{host_ms / 1000:6.2f} s" if host_ms is not None else "      -"
                    self._echo(f"  {at}  {label}")


def how_to_reach(vm: dict[str, Any]) -> list[str]:
    """Lines telling the user where the VM's exposed ports, agent and console are."""
    name = vm["name"]
    lines = []
    for lease in vm.get("ports") or []:
        purpose = lease["purpose"]
        url = f"http://127.0.0.1:{lease['host_port']}"
        if purpose.startswith("expose:"):
            lines.append(f"  {purpose.removeprefix('expose:')}: {url}/")
        elif purpose != "agent":
            lines.append(f"  {purpose}: 127.0.0.1:{lease['host_port']}")
    if vm.get("ip_address") and vm.get("network_mode") in ("bridged", "dhcp"):
        lines.append(f"  address on the bridge: {vm['ip_address']}")
    if vm.get("agent_url"):
        lines.append(f"  agent: {vm['agent_url']} (or through volantd: /api/v1/vms/{name}/agent/)")
    lines.append(f"  console: volar vms console {name}    logs: volar vms logs -f {name}")
    return lines
