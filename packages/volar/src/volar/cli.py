"""The `volar` command line: plugins and VMs of a volantd, from a terminal.

Exit status: 0 ok, 1 error (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from volar import __version__
from volar.client import Client, VolarError
from volar.output import Format, emit

app = typer.Typer(no_args_is_help=True, help="Manage Volant plugins and microVMs.")
plugins_app = typer.Typer(no_args_is_help=True, help="Install and manage plugins.")
vms_app = typer.Typer(no_args_is_help=True, help="Create and manage microVMs.")
app.add_typer(plugins_app, name="plugins")
app.add_typer(vms_app, name="vms")

API_HELP = "volantd's URL (or unix:/path) [env VOLANT_API_BASE, default http://127.0.0.1:7777]"
OutputOption = Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml")]
PLUGIN_COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("RUNTIME", "runtime"),
                  ("ENABLED", "enabled")]  # fmt: skip
VM_COLUMNS = [("NAME", "name"), ("STATUS", "status"), ("PLUGIN", "plugin"),
              ("CPUS", "cpu_cores"), ("MEMORY", "memory_mb"), ("AGENT", "agent_url")]  # fmt: skip


class State:
    api: str | None = None
    api_key: str | None = None


state = State()


def client() -> Client:
    return Client(state.api, state.api_key)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.callback()
def main(
    api: Annotated[str | None, typer.Option(help=API_HELP)] = None,
    api_key: Annotated[str | None, typer.Option(help="API key [env VOLANT_API_KEY]")] = None,
) -> None:
    """Volant's CLI: everything volantd can do, from a terminal."""
    state.api, state.api_key = api, api_key


@app.command()
def version() -> None:
    """Print the client's version and the server's (if it answers)."""
    typer.echo(f"volar {__version__}")
    try:
        server = client().get("/api/v1/system/info")
        typer.echo(f"volantd {server['version']} at {client().api}")
    except VolarError as error:
        typer.echo(f"volantd: {error}")


# -- plugins -------------------------------------------------------------------------------


@plugins_app.command("list")
def plugins_list(output: OutputOption = Format.TABLE) -> None:
    """Installed plugins."""
    emit(client().get("/api/v1/plugins")["items"], output, PLUGIN_COLUMNS)


@plugins_app.command("show")
def plugins_show(name: str, output: OutputOption = Format.YAML) -> None:
    """A plugin's manifest."""
    manifest = client().get(f"/api/v1/plugins/{name}")
    emit(manifest, Format.YAML if output is Format.TABLE else output)


@plugins_app.command("install")
def plugins_install(
    source: Annotated[str, typer.Argument(help="manifest file or URL")],
    replace: Annotated[bool, typer.Option(help="replace an installed plugin of that name")] = False,
    output: OutputOption = Format.TABLE,
) -> None:
    """Install from a manifest file (its relative artifact paths are resolved against its
    folder) or a URL (volantd fetches it)."""
    if "://" in source:
        body: dict[str, Any] = {"source": source}
    else:
        path = Path(source)
        try:
            body = {"source": str(path.resolve(strict=True))}
        except OSError as error:
            fail(f"cannot read {source}: {error.strerror}")
    plugin = client().post("/api/v1/plugins", body, params={"replace": replace})
    emit(plugin, output, PLUGIN_COLUMNS)


@plugins_app.command("enable")
def plugins_enable(name: str) -> None:
    """Allow new VMs from the plugin."""
    client().post(f"/api/v1/plugins/{name}/enabled", {"enabled": True})
    typer.echo(f"plugin {name} enabled")


@plugins_app.command("disable")
def plugins_disable(name: str) -> None:
    """Refuse new VMs from the plugin (running VMs are not touched)."""
    client().post(f"/api/v1/plugins/{name}/enabled", {"enabled": False})
    typer.echo(f"plugin {name} disabled")


@plugins_app.command("remove")
def plugins_remove(
    name: str, force: Annotated[bool, typer.Option(help="delete its VMs first")] = False
) -> None:
    """Remove a plugin (refused while VMs use it, unless --force)."""
    client().delete(f"/api/v1/plugins/{name}", params={"force": force})
    typer.echo(f"plugin {name} removed")


# -- vms -----------------------------------------------------------------------------------


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
        typer.echo(f"error: --wait must be agent, healthy or none (got {wait!r})", err=True)
        raise typer.Exit(2)
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


def run() -> None:
    """Entry point: VolarError → one line on stderr and exit 1."""
    try:
        app(standalone_mode=True)
    except VolarError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
