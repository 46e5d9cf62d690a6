"""The `volantd` command line: the daemon and its host-side maintenance commands."""

from pathlib import Path
from typing import Annotated

import typer

from volantd import __version__
from volantd.boot.cli import boot_image_app
from volantd.errors import VolantError
from volantd.hostcheck import host_app
from volantd.kernels.cli import kernels_app

app = typer.Typer(no_args_is_help=True, help="The Volant control plane.")
app.add_typer(kernels_app, name="kernels")
app.add_typer(host_app, name="host")
app.add_typer(boot_image_app, name="boot-image")


@app.command()
def version() -> None:
    """Print the volantd version."""
    typer.echo(f"volantd {__version__}")


@app.command()
def serve(
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT [env VOLANT_API_LISTEN, default 127.0.0.1:7777]")
    ] = None,
    socket: Annotated[
        Path | None, typer.Option(help="listen on this unix socket instead [env VOLANT_API_SOCKET]")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="state folder [env VOLANT_HOME, default /var/lib/volant]")
    ] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file [env VOLANT_DB_PATH]")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="critical/error/warning/info/debug [env VOLANT_LOG_LEVEL]")
    ] = None,
    allow_remote_without_key: Annotated[
        bool | None,
        typer.Option(
            "--allow-remote-without-key",
            help="listen on a non-loopback address without VOLANT_API_KEY (trusted networks only)",
        ),
    ] = None,
    stop_vms_on_exit: Annotated[
        bool | None,
        typer.Option(
            "--stop-vms-on-exit",
            help="stop every VM when volantd exits (default: leave them running)",
        ),
    ] = None,
) -> None:
    """Run the API server (the API key comes from VOLANT_API_KEY only, never the command line)."""
    from volantd.serve import serve as run_server
    from volantd.settings import Settings

    try:
        settings = Settings.from_environment(
            listen=listen, unix_socket=socket, home=home, db_path=db,
            log_level=log_level.lower() if log_level else None,
            allow_remote_without_key=allow_remote_without_key, stop_vms_on_exit=stop_vms_on_exit,
        )  # fmt: skip
        run_server(settings)
    except VolantError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@app.callback()
def main() -> None:
    """The Volant control plane."""
