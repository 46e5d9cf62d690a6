"""`volar events`: follow volantd's VM event stream (Server-Sent Events)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml
from httpx_sse import EventSource

from volar.context import OutputOption, client
from volar.output import Format


def events(
    vm: Annotated[str | None, typer.Option(help="only this VM's events")] = None,
    since: Annotated[
        int | None, typer.Option(min=0, help="first replay the stored events after this id")
    ] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Follow VM events as they happen.

    Ctrl-C ends it. `-o json` prints one object per line, `-o yaml` one document per event.
    """
    params: dict[str, Any] = {}
    if vm is not None:
        params["vm"] = vm
    if since is not None:
        params["since"] = since
    headers = {"Accept": "text/event-stream"}
    try:
        with client(timeout=60).stream(
            "GET", "/api/v1/events/vms", params=params, headers=headers
        ) as response:
            for event in EventSource(response).iter_sse():
                if event.data:
                    _print(json.loads(event.data), output)
    except KeyboardInterrupt:
        pass


def _print(event: dict[str, Any], output: Format) -> None:
    if output is Format.JSON:
        typer.echo(json.dumps(event))
    elif output is Format.YAML:
        typer.echo("---\n" + yaml.safe_dump(event, sort_keys=False), nl=False)
    else:
        name, status = event.get("name") or "-", event.get("status") or "-"
        typer.echo(f"{event['timestamp']}  {event['id']:>6}  {event['type']:<15}  {name:<20}  "
                   f"{status:<9}  {event.get('message') or ''}")  # fmt: skip
