"""What every command shares: the server to talk to, output options, and how to fail."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Annotated, NoReturn
from urllib.parse import quote

import httpx
import typer

from volar.client import Client
from volar.output import Format

API_HELP = "volantd's URL, or unix:/path for its socket (default http://127.0.0.1:7777)"
OutputOption = Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml")]
STREAMING = httpx.Timeout(10.0, read=None)
"""For follows and command output, which last as long as they last: only connecting is bounded."""


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


def vm_path(name: str, rest: str = "") -> str:
    """The API path of VM ``name`` (quoted), with ``rest`` appended: ``/api/v1/vms/web/logs``."""
    return f"/api/v1/vms/{quote(name, safe='')}{rest}"


@contextlib.contextmanager
def interruptible(code: int) -> Iterator[None]:
    """Ctrl-C exits with ``code`` (no traceback, no "Aborted!"); a closed stdout (``| head``)
    ends the command quietly."""
    try:
        yield
    except KeyboardInterrupt:
        raise typer.Exit(code) from None
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
