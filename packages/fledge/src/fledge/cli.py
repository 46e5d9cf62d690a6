"""The `fledge` command line."""

from pathlib import Path

import typer

from fledge import __version__
from pluginspec import validate_file

app = typer.Typer(no_args_is_help=True, help="Build Volant plugin images.")


@app.command()
def version() -> None:
    """Print the fledge version."""
    typer.echo(f"fledge {__version__}")


@app.command()
def validate(
    files: list[Path] = typer.Argument(  # noqa: B008 - typer declares arguments this way
        None, help="fledge.toml files or plugin manifests (default: ./fledge.toml)"
    ),
) -> None:
    """Check fledge.toml files and manifests; print every error with its field path."""
    reports = [validate_file(path) for path in files or [Path("fledge.toml")]]
    for report in reports:
        for line in report.lines():
            typer.echo(line, err=not report.ok)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)
