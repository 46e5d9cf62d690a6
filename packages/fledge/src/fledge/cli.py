"""The `fledge` command line."""

import typer

from fledge import __version__

app = typer.Typer(no_args_is_help=True, help="Build Volant plugin images.")


@app.command()
def version() -> None:
    """Print the fledge version."""
    typer.echo(f"fledge {__version__}")


@app.command()
def build() -> None:
    """Build a plugin image from fledge.toml (lands with the initramfs issue)."""
    typer.echo("fledge build is not implemented yet: it arrives with the initramfs plugin issue.", err=True)
    raise typer.Exit(1)
