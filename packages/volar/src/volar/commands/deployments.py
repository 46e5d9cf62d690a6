"""`volar deployments ...`: groups of identical VMs kept at a desired replica count."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from volar.client import Client
from volar.commands.vms import read_document
from volar.context import OutputOption, client, fail, usage_error
from volar.output import Format, emit

deployments_app = typer.Typer(no_args_is_help=True, help="Run N identical VMs of a plugin.")
DEPLOYMENT_COLUMNS = [("NAME", "name"), ("DESIRED", "desired_replicas"),
                      ("READY", "ready_replicas"), ("ERROR", "last_error")]  # fmt: skip
REPLICA_COLUMNS = [("REPLICA", "name"), ("STATUS", "status"), ("READY", "ready")]
POLL_INTERVAL_S = 0.5
WaitOption = Annotated[bool, typer.Option(help="wait until every replica is ready")]
TimeoutOption = Annotated[float, typer.Option(help="seconds to wait with --wait")]


@deployments_app.command("list")
def deployments_list(output: OutputOption = Format.TABLE) -> None:
    """Deployments, by name."""
    emit(client().get("/api/v1/deployments"), output, DEPLOYMENT_COLUMNS)


@deployments_app.command("get")
def deployments_get(name: str, output: OutputOption = Format.TABLE) -> None:
    """One deployment and its replicas."""
    _show(client().get(f"/api/v1/deployments/{name}"), output)


@deployments_app.command("create")
def deployments_create(
    name: str,
    plugin: Annotated[str | None, typer.Option(help="plugin of the replicas")] = None,
    replicas: Annotated[int, typer.Option(min=0, help="how many VMs")] = 1,
    config: Annotated[
        Path | None, typer.Option(help="VM config file (JSON or YAML) for every replica")
    ] = None,
    cpus: Annotated[int | None, typer.Option(help="vCPUs per replica")] = None,
    memory: Annotated[int | None, typer.Option(help="MiB per replica")] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 300,
    output: OutputOption = Format.TABLE,
) -> None:
    """Create a deployment from a plugin (or a VM config file) and boot its replicas."""
    document: dict[str, Any] = read_document(config) if config is not None else {}
    if not isinstance(document, dict):
        fail(f"{config} must hold a VM config object")
    document = document.get("config", document)  # upstream's {"config": {...}} envelope too
    if plugin is not None:
        document["plugin"] = plugin
    if not document.get("plugin"):
        usage_error("a plugin is needed: --plugin NAME, or `plugin` in the --config file")
    resources = {"cpu_cores": cpus, "memory_mb": memory}
    if any(value is not None for value in resources.values()):
        document["resources"] = {
            **document.get("resources", {}),
            **{key: value for key, value in resources.items() if value is not None},
        }
    api = client()
    body = {"name": name, "replicas": replicas, "config": document}
    deployment = api.post("/api/v1/deployments", body)
    _show(_wait_ready(api, name, timeout) if wait else deployment, output)


@deployments_app.command("scale")
def deployments_scale(
    name: str,
    replicas: Annotated[int, typer.Argument(min=0, help="the new replica count")],
    wait: WaitOption = False,
    timeout: TimeoutOption = 300,
    output: OutputOption = Format.TABLE,
) -> None:
    """Change the replica count (scale-down removes the highest-numbered replicas)."""
    api = client()
    deployment = api.patch(f"/api/v1/deployments/{name}", {"replicas": replicas})
    _show(_wait_ready(api, name, timeout) if wait else deployment, output)


@deployments_app.command("delete")
def deployments_delete(name: str) -> None:
    """Stop and delete every replica, then the deployment."""
    client(timeout=600).delete(f"/api/v1/deployments/{name}")
    typer.echo(f"deployment {name} deleted")


def _wait_ready(api: Client, name: str, timeout: float) -> Any:
    """Poll until ready == desired; a line on stderr each time the ready count changes."""
    deadline = time.monotonic() + timeout
    last_ready = -1
    while True:
        deployment = api.get(f"/api/v1/deployments/{name}")
        ready, desired = deployment["ready_replicas"], deployment["desired_replicas"]
        if ready != last_ready:
            typer.echo(f"  {ready}/{desired} replicas ready", err=True)
            last_ready = ready
        if ready == desired:
            return deployment
        if time.monotonic() > deadline:
            reason = f": {deployment['last_error']}" if deployment.get("last_error") else ""
            fail(f"deployment {name}: {ready} of {desired} replicas ready after "
                 f"{timeout:g} s{reason}")  # fmt: skip
        time.sleep(POLL_INTERVAL_S)


def _show(deployment: dict[str, Any], output: Format) -> None:
    emit(deployment, output, DEPLOYMENT_COLUMNS)
    if output is Format.TABLE and deployment["replicas"]:
        typer.echo()
        emit(deployment["replicas"], output, REPLICA_COLUMNS)
