"""`volar plugins ...`: install, inspect, enable, disable and remove plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from volar.context import OutputOption, client, fail
from volar.output import Format, emit

plugins_app = typer.Typer(no_args_is_help=True, help="Install and manage plugins.")
PLUGIN_COLUMNS = [("NAME", "name"), ("VERSION", "version"), ("RUNTIME", "runtime"),
                  ("ENABLED", "enabled")]  # fmt: skip


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
