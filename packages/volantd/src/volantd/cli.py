"""The `volantd` command line: the daemon and its host-side maintenance commands."""

import typer

from volantd import __version__
from volantd.kernels.cli import kernels_app

app = typer.Typer(no_args_is_help=True, help="The Volant control plane.")
app.add_typer(kernels_app, name="kernels")


@app.command()
def version() -> None:
    """Print the volantd version."""
    typer.echo(f"volantd {__version__}")


@app.callback()
def main() -> None:
    """The Volant control plane (the `serve` command lands with the volantd issue)."""
