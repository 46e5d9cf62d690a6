"""The `volar` command line: everything volantd can do, from a terminal.

Exit status: 0 ok, 1 error (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from volar import __version__
from volar.client import VolarError

# These modules register their `vms` subcommands when imported.
from volar.commands import config, console, guest, wait, workload  # noqa: F401
from volar.commands.deployments import deployments_app
from volar.commands.devices import devices_app
from volar.commands.events import events
from volar.commands.host import doctor, setup
from volar.commands.plugins import plugins_app
from volar.commands.vms import vms_app
from volar.context import API_HELP, OutputOption, client, state
from volar.output import Format, emit

app = typer.Typer(no_args_is_help=True, help="Manage Volant plugins and microVMs.")
app.add_typer(plugins_app, name="plugins")
app.add_typer(vms_app, name="vms")
app.add_typer(deployments_app, name="deployments")
app.add_typer(devices_app, name="devices")
app.command()(events)
app.command()(doctor)
app.command()(setup)


@app.callback()
def main(
    api: Annotated[str | None, typer.Option(envvar="VOLANT_API_BASE", help=API_HELP)] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="VOLANT_API_KEY", help="API key", show_envvar=True)
    ] = None,
) -> None:
    """Volant's CLI: everything volantd can do, from a terminal."""
    state.api, state.api_key = api, api_key


@app.command()
def version(output: OutputOption = Format.TABLE) -> None:
    """Print the client's version and the server's (if it answers)."""
    versions: dict[str, Any] = {"volar": __version__, "volantd": None, "api": client().api}
    try:
        versions["volantd"] = client().get("/api/v1/system/info")["version"]
    except VolarError as error:
        versions["error"] = str(error)
    if output is not Format.TABLE:
        emit(versions, output)
        return
    typer.echo(f"volar {__version__}")
    if versions["volantd"]:
        typer.echo(f"volantd {versions['volantd']} at {versions['api']}")
    else:
        typer.echo(f"volantd: {versions['error']}")


def run() -> None:
    """Entry point: VolarError → one line on stderr and exit 1."""
    try:
        app(standalone_mode=True)
    except VolarError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
