"""What every command shares: the server to talk to, output options, and how to fail."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from volar.client import Client
from volar.output import Format

API_HELP = "volantd's URL (or unix:/path) [env VOLANT_API_BASE, default http://127.0.0.1:7777]"
OutputOption = Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml")]


class State:
    """Global options, set by the root callback before any command runs."""

    api: str | None = None
    api_key: str | None = None


state = State()


def client(timeout: float = 300) -> Client:
    """A client for the volantd the global options point at."""
    return Client(state.api, state.api_key, timeout=timeout)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` once on stderr and exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def usage_error(message: str) -> NoReturn:
    """Print ``error: message`` once on stderr and exit 2 (bad arguments)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
