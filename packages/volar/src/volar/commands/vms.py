"""`volar vms ...`: the VM records and their life cycle."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from volar.context import OutputOption, client, usage_error
from volar.output import Format, emit

vms_app = typer.Typer(no_args_is_help=True, help="Create and manage microVMs.")
VM_COLUMNS = [("NAME", "name"), ("STATUS", "status"), ("PLUGIN", "plugin"),
              ("CPUS", "cpu_cores"), ("MEMORY", "memory_mb"), ("AGENT", "agent_url")]  # fmt: skip


@vms_app.command("list")
def vms_list(
    status: Annotated[list[str] | None, typer.Option(help="only these states")] = None,
    plugin: Annotated[str | None, typer.Option()] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """VMs, oldest first."""
    params: dict[str, Any] = {"status": status or []}
    if plugin:
        params["plugin"] = plugin
    emit(client().get("/api/v1/vms", params=params), output, VM_COLUMNS)


@vms_app.command("get")
def vms_get(name: str, output: OutputOption = Format.TABLE) -> None:
    """One VM."""
    emit(client().get(f"/api/v1/vms/{name}"), output, [*VM_COLUMNS, ("ERROR", "last_error")])


@vms_app.command("create")
def vms_create(
    name: str,
    plugin: Annotated[str, typer.Option(help="installed plugin to run")],
    cpus: Annotated[int | None, typer.Option(help="vCPUs (default: the manifest's)")] = None,
    memory: Annotated[int | None, typer.Option(help="MiB (default: the manifest's)")] = None,
    wait: Annotated[str, typer.Option(help="agent, healthy or none")] = "agent",
    start: Annotated[bool, typer.Option(help="boot it (--no-start: only record it)")] = True,
    output: OutputOption = Format.TABLE,
) -> None:
    """Create a VM and boot it; with --wait, until it is ready."""
    if wait not in ("agent", "healthy", "none"):
        usage_error(f"--wait must be agent, healthy or none (got {wait!r})")
    body = {"name": name, "plugin": plugin, "cpu_cores": cpus, "memory_mb": memory}
    params = {"wait": wait, "start": start}
    vm = client().post("/api/v1/vms", {k: v for k, v in body.items() if v is not None},
                       params=params)  # fmt: skip
    emit(vm, output, [*VM_COLUMNS])
    if output is Format.TABLE and vm.get("ports"):
        for lease in vm["ports"]:
            typer.echo(f"  {lease['purpose']}: http://127.0.0.1:{lease['host_port']}")


def _life_cycle(action: str, name: str, output: Format) -> None:
    emit(client().post(f"/api/v1/vms/{name}/{action}"), output, VM_COLUMNS)


@vms_app.command("start")
def vms_start(name: str, output: OutputOption = Format.TABLE) -> None:
    """Boot a stopped VM."""
    _life_cycle("start", name, output)


@vms_app.command("stop")
def vms_stop(name: str, output: OutputOption = Format.TABLE) -> None:
    """Stop a VM (through its agent first)."""
    _life_cycle("stop", name, output)


@vms_app.command("restart")
def vms_restart(name: str, output: OutputOption = Format.TABLE) -> None:
    """Stop, then start (applies a changed config)."""
    _life_cycle("restart", name, output)


@vms_app.command("delete")
def vms_delete(name: str) -> None:
    """Stop (if running) and delete a VM."""
    client().delete(f"/api/v1/vms/{name}")
    typer.echo(f"vm {name} deleted")
