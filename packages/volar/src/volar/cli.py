"""The `volar` command line."""

import typer

from volar import __version__

app = typer.Typer(no_args_is_help=True, help="Manage Volant plugins and microVMs.")


@app.command()
def version() -> None:
    """Print the volar version."""
    typer.echo(f"volar {__version__}")


@app.callback()
def main() -> None:
    """Volant's CLI (the full command set lands with the volar issue)."""
