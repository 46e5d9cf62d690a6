"""`volar vms console NAME`: the VM's serial console, through volantd's WebSocket."""

from __future__ import annotations

import os
import sys
from typing import Annotated
from urllib.parse import quote

import typer
from websockets.sync.client import ClientConnection

from volar import console
from volar.client import APIError, resolve_api
from volar.commands.vms import vms_app
from volar.context import client, fail, state, usage_error

ATTACHABLE = ("starting", "running", "stopping")


@vms_app.command("console")
def vms_console(
    name: str,
    escape: Annotated[
        str,
        typer.Option(
            help="detach key(s) when stdin is a terminal: ^] (default), ^P, ^P^Q, ctrl-a; "
            "'none': no detach key"
        ),
    ] = console.DEFAULT_ESCAPE,
    linger: Annotated[
        float,
        typer.Option(
            min=0,
            help="when stdin is not a terminal: after it ends, keep printing output until the "
            "console has been quiet this many seconds",
        ),
    ] = 2.0,
) -> None:
    """Attach to a VM's serial console (the guest's shell, boot output), from any machine.

    On a terminal, keys go to the guest in raw mode (Ctrl-C included) until the detach key.
    Otherwise stdin is sent to the console, and output is printed until it goes quiet.
    The console serves one session at a time: while one is attached, another is refused.
    """
    try:
        sequence = console.parse_escape(escape)
    except console.EscapeError as error:
        usage_error(f"--escape: {error}")
    api = resolve_api(state.api)
    try:  # a plain request first: its errors name the VM, the key or the server precisely
        vm = client(timeout=15).get(f"/api/v1/vms/{quote(name, safe='')}")
    except APIError as error:
        if error.status == 401:
            fail(f"volantd at {api} refused the API key: {error} (use --api-key or VOLANT_API_KEY)")
        raise
    if vm.get("status") not in ATTACHABLE:
        fail(
            f'vm "{name}" is {vm.get("status")}: its console exists only while it runs '
            f"(start it with `volar vms start {name}`)"
        )

    api_key = state.api_key or os.environ.get("VOLANT_API_KEY")
    interactive = os.isatty(sys.stdin.fileno())
    with console.open_console(api, name, api_key) as ws:
        result = _attach(ws, name, interactive, sequence, linger)

    if result.outcome is console.Outcome.DETACHED:
        typer.echo("\nDetached.", err=True)
    elif result.outcome is console.Outcome.CLOSED:
        if interactive:
            reason = f": {result.reason}" if result.reason else ""
            typer.echo(f"\nConsole closed by volantd{reason}.", err=True)
    elif result.outcome is console.Outcome.REFUSED:
        fail(f"volantd refused the console: {result.reason}")
    elif result.outcome is console.Outcome.LOST:
        if interactive:
            typer.echo("", err=True)  # off the guest's prompt line
        fail(f'console of vm "{name}" lost: {result.reason}')


def _attach(
    ws: ClientConnection, name: str, interactive: bool, sequence: bytes, linger: float
) -> console.Result:
    """Attach stdin and stdout; SIGTERM/SIGHUP exit 128+n and Ctrl-C (not a terminal) 130."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    if interactive:
        keys = console.describe_escape(sequence)
        how = f"Detach with {keys} ." if sequence else "No detach key: it ends when volantd does."
        typer.echo(f"Connected to {name}'s console. {how}", err=True)
    sys.stdout.flush()
    try:
        with console.terminating_signals():
            if interactive:
                with console.raw_terminal(in_fd):
                    return console.attach(ws, in_fd, out_fd, escape=sequence, interactive=True)
            return console.attach(ws, in_fd, out_fd, interactive=False, linger=linger)
    except console.Terminated as stop:
        if interactive:
            typer.echo(f"\n{stop}: detached.", err=True)
        raise typer.Exit(128 + stop.signum) from None
    except KeyboardInterrupt:  # only when stdin is not a terminal (raw mode passes Ctrl-C on)
        raise typer.Exit(130) from None
