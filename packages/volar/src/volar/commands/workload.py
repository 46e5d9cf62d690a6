"""`volar vms operations|call`: the workload's API, as its OpenAPI document describes it.

Calls go through volantd and the guest agent's proxy (``/api/v1/vms/NAME/proxy/...``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import httpx
import typer
import yaml

from volar.client import APIError, Client
from volar.commands.vms import vms_app
from volar.context import OutputOption, client, fail, interruptible, usage_error, vm_path
from volar.output import Format, emit

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


OPERATION_COLUMNS = [("OPERATION ID", "operation_id"), ("METHOD", "method"), ("PATH", "path"),
                     ("SUMMARY", "summary")]  # fmt: skip


def _operations(api: Client, name: str) -> list[dict[str, str]]:
    """The operations of the VM's workload, sorted by id, path and method; an operation
    without an ``operationId`` gets ``METHOD:PATH``."""
    response = api.request("GET", vm_path(name, "/openapi"))
    try:
        if "json" in response.headers.get("content-type", ""):
            document = json.loads(response.content)
        else:
            document = yaml.safe_load(response.content)
    except (ValueError, yaml.YAMLError):
        fail(f"the OpenAPI document of vm {name} is neither JSON nor YAML")
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        fail(f"the OpenAPI document of vm {name} has no paths")
    operations = []
    for path, item in document["paths"].items():
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            operations.append(
                {
                    "operation_id": str(operation.get("operationId") or f"{method.upper()}:{path}"),
                    "method": method.upper(),
                    "path": str(path),
                    "summary": " ".join(str(operation.get("summary") or "").split()),
                }
            )
    operations.sort(key=lambda op: (op["operation_id"].lower(), op["path"], op["method"]))
    return operations


@vms_app.command("operations")
def vms_operations(name: str, output: OutputOption = Format.TABLE) -> None:
    """The operations the VM's workload publishes in its OpenAPI document."""
    emit(_operations(client(), name), output, OPERATION_COLUMNS)


@vms_app.command("call")
def vms_call(
    name: str,
    operation: Annotated[str, typer.Argument(help="an operationId, or METHOD:PATH")],
    query: Annotated[
        list[str] | None, typer.Option("--query", "-q", help="k=v query parameter (repeatable)")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="k=v to fill {k} in the path (repeatable)"),
    ] = None,
    body: Annotated[str | None, typer.Option(help="the request body (JSON)")] = None,
    body_file: Annotated[
        str | None, typer.Option(help="read the body from a file (- for stdin)")
    ] = None,
    content_type: Annotated[str, typer.Option(help="the body's type")] = "application/json",
    timeout: Annotated[float, typer.Option(min=0.001, help="seconds")] = 60,
) -> None:
    """Call one of the workload's operations and print the answer.

    JSON answers are pretty-printed. An HTTP error status prints `HTTP <code>` on stderr and
    exits 1.
    """
    if body is not None and body_file is not None:
        usage_error("give --body or --body-file, not both")
    if body is not None and "json" in content_type:
        try:
            json.loads(body)
        except ValueError as error:
            usage_error(f"--body is not valid JSON: {error}")
    api = client(timeout=timeout)
    operations = _operations(api, name)
    wanted = operation.lower()
    found = next((op for op in operations if op["operation_id"].lower() == wanted), None)
    if found is None and ":" in operation:
        method, _, path = operation.partition(":")
        found = next(
            (op for op in operations if (op["method"], op["path"]) == (method.upper(), path)),
            None,
        )
    if found is None:
        fail(f"vm {name} has no operation {operation!r} (see: volar vms operations {name})")
    path = _fill_path(found, _pairs(param, "--param"))
    content: bytes | None = body.encode() if body is not None else None
    if body_file is not None:
        try:
            content = sys.stdin.buffer.read() if body_file == "-" else Path(body_file).read_bytes()
        except OSError as error:
            fail(f"cannot read {body_file}: {error.strerror or error}")
    headers = {"content-type": content_type} if content is not None else {}
    # The workload is behind kestrel's proxy (/v1/proxy/...); upstream sent the bare path to
    # the agent, which 404s it.
    response = api.request(
        found["method"], vm_path(name, "/proxy" + path), check=False,
        params=_pairs(query, "--query"), content=content, headers=headers,
    )  # fmt: skip
    if response.status_code >= 400 and _is_volantd_error(response):
        raise APIError(response.status_code, response.json()["error"])
    with interruptible(130):
        _print_body(response)
    if response.status_code >= 400:
        typer.echo(f"HTTP {response.status_code}", err=True)
        raise typer.Exit(1)


def _pairs(items: list[str] | None, option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items or []:
        key, _, value = item.partition("=")
        if not key:
            usage_error(f"{option} takes k=v (got {item!r})")
        pairs.append((key, value))
    return pairs


def _fill_path(operation: dict[str, str], params: list[tuple[str, str]]) -> str:
    values = dict(params)

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            usage_error(f"operation {operation['operation_id']} needs --param {key}=VALUE")
        return quote(values[key], safe="")

    return re.sub(r"\{([^}/]+)\}", value, operation["path"])


def _is_volantd_error(response: httpx.Response) -> bool:
    """volantd's own errors (no such VM, VM stopped) carry its request id; the workload's
    errors are passed through as they are."""
    try:
        data = response.json()
    except ValueError:
        return False
    return isinstance(data, dict) and "request_id" in data and "error" in data


def _print_body(response: httpx.Response) -> None:
    if "json" in response.headers.get("content-type", "") and response.content:
        try:
            print(json.dumps(response.json(), indent=2, ensure_ascii=False))
            return
        except ValueError:
            pass
    sys.stdout.buffer.write(response.content)
    sys.stdout.buffer.flush()
