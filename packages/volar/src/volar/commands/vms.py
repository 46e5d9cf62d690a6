"""`volar vms ...`: the VM records and their life cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from volar.context import OutputOption, client, fail, usage_error
from volar.output import Format, emit
from volar.progress import BootProgress, how_to_reach

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
    timeout: Annotated[float, typer.Option(help="seconds to wait for --wait")] = 120,
    start: Annotated[bool, typer.Option(help="boot it (--no-start: only record it)")] = True,
    config: Annotated[
        Path | None, typer.Option(help="VM config file (JSON or YAML) to create it from")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no boot progress")] = False,
    output: OutputOption = Format.TABLE,
) -> None:
    """Create a VM and boot it.

    Unless --wait none, shows the boot's phases as they happen until the VM is ready, then
    how to reach it.
    """
    if wait not in ("agent", "healthy", "none"):
        usage_error(f"--wait must be agent, healthy or none (got {wait!r})")
    body: dict[str, Any] = {"name": name, "plugin": plugin, "cpu_cores": cpus, "memory_mb": memory}
    if config is not None:
        body["config"] = read_document(config)
    body = {key: value for key, value in body.items() if value is not None}
    params = {"wait": wait, "start": start, "timeout": timeout}
    api = client(timeout=timeout + 30)
    show_progress = start and wait != "none" and not quiet
    if show_progress:
        typer.echo(f"Booting {name} ({plugin})...", err=True)
        with BootProgress(api, name, lambda line: typer.echo(line, err=True)) as progress:
            vm = api.post("/api/v1/vms", body, params=params)
            progress.finish(vm)
    else:
        vm = api.post("/api/v1/vms", body, params=params)
    emit(vm, output, VM_COLUMNS)
    if output is Format.TABLE and vm["status"] == "running":
        typer.echo(f"{name} is running. Reach it:")
        for line in how_to_reach(vm):
            typer.echo(line)


def read_document(path: Path) -> Any:
    """A JSON or YAML file's content; errors name the file."""
    try:
        return yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    except yaml.YAMLError as error:
        fail(f"{path} is not valid JSON or YAML: {error}")


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
