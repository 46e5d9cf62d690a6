"""The `volar` command line: everything volantd can do, from a terminal.

Exit status: 0 ok, 1 error (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from volar import __version__
from volar.client import VolarError
from volar.commands.plugins import plugins_app
from volar.commands.vms import vms_app
from volar.context import API_HELP, client, state

app = typer.Typer(no_args_is_help=True, help="Manage Volant plugins and microVMs.")
app.add_typer(plugins_app, name="plugins")
app.add_typer(vms_app, name="vms")


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


def run() -> None:
    """Entry point: VolarError → one line on stderr and exit 1."""
    try:
        app(standalone_mode=True)
    except VolarError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
