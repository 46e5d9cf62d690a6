"""`volar vms ...`: the VM records and their life cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from volar.context import OutputOption, client, fail, usage_error
from volar.output import Format, emit
from volar.progress import BootProgress, how_to_reach

vms_app = typer.Typer(no_args_is_help=True, help="Create and manage microVMs.")
VM_COLUMNS = [("NAME", "name"), ("STATUS", "status"), ("PLUGIN", "plugin"),
              ("CPUS", "cpu_cores"), ("MEMORY", "memory_mb"), ("AGENT", "agent_url")]  # fmt: skip


@vms_app.command("list")
def vms_list(
    status: Annotated[list[str] | None, typer.Option(help="only these states")] = None,
    plugin: Annotated[str | None, typer.Option()] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """VMs, oldest first."""
    params: dict[str, Any] = {"status": status or []}
    if plugin:
        params["plugin"] = plugin
    emit(client().get("/api/v1/vms", params=params), output, VM_COLUMNS)


@vms_app.command("get")
def vms_get(name: str, output: OutputOption = Format.TABLE) -> None:
    """One VM."""
    emit(client().get(f"/api/v1/vms/{name}"), output, [*VM_COLUMNS, ("ERROR", "last_error")])


@vms_app.command("create")
def vms_create(
    name: str,
    plugin: Annotated[str, typer.Option(help="installed plugin to run")],
    cpus: Annotated[int | None, typer.Option(help="vCPUs (default: the manifest's)")] = None,
    memory: Annotated[int | None, typer.Option(help="MiB (default: the manifest's)")] = None,
    wait: Annotated[str, typer.Option(help="agent, healthy or none")] = "agent",
    timeout: Annotated[float, typer.Option(help="seconds to wait for --wait")] = 120,
    start: Annotated[bool, typer.Option(help="boot it (--no-start: only record it)")] = True,
    config: Annotated[
        Path | None, typer.Option(help="VM config file (JSON or YAML) to create it from")
    ] = None,
    network: Annotated[
        str | None, typer.Option(help="network mode: user, isolated, bridged or dhcp")
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish",
            "-p",
            help="publish a guest port on the host: HOST:GUEST, HOST:GUEST/udp, or GUEST (any host "
            "port); repeatable",
        ),
    ] = None,
    user_data: Annotated[
        Path | None, typer.Option("--cloud-init-user-data", help="cloud-init user-data file")
    ] = None,
    meta_data: Annotated[
        Path | None, typer.Option("--cloud-init-meta-data", help="cloud-init meta-data file")
    ] = None,
    network_config: Annotated[
        Path | None,
        typer.Option("--cloud-init-network-config", help="cloud-init network-config file"),
    ] = None,
    seed_mode: Annotated[
        str | None, typer.Option("--cloud-init-seed", help="seed volume: vfat or iso9660")
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option(
            "--device",
            help="pass a host PCI device through (VFIO), by address like 0000:01:00.0 "
            "(needs the cloud-hypervisor driver on a KVM host)",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no boot progress")] = False,
    output: OutputOption = Format.TABLE,
) -> None:
    """Create a VM and boot it.

    Unless --wait none, shows the boot's phases as they happen until the VM is ready, then
    how to reach it.
    """
    if wait not in ("agent", "healthy", "none"):
        usage_error(f"--wait must be agent, healthy or none (got {wait!r})")
    body: dict[str, Any] = {"name": name, "plugin": plugin, "cpu_cores": cpus, "memory_mb": memory}
    document: dict[str, Any] = dict(read_document(config) or {}) if config is not None else {}
    api = client(timeout=timeout + 30)
    if network is not None:
        document["network"] = {**(document.get("network") or {}), "mode": network}
    if publish:
        manifest = api.get(f"/api/v1/plugins/{plugin}/manifest")
        document["expose"] = published_ports(publish, _manifest_exposes(document, manifest))
    documents = {"user_data": user_data, "meta_data": meta_data, "network_config": network_config}
    if seed_mode is not None or any(documents.values()):
        cloud_init = dict(document.get("cloud_init") or {})
        if seed_mode is not None:
            cloud_init["seed_mode"] = seed_mode
        for key, path in documents.items():
            if path is not None:  # volantd reads no files on request: send the content
                cloud_init[key] = {"content": read_text(path)}
        document["cloud_init"] = cloud_init
    if device:
        devices = dict(document.get("devices") or {})
        devices["pci_passthrough"] = [*(devices.get("pci_passthrough") or []), *device]
        document["devices"] = devices
    if document:
        body["config"] = document
    body = {key: value for key, value in body.items() if value is not None}
    params = {"wait": wait, "start": start, "timeout": timeout}
    show_progress = start and wait != "none" and not quiet
    if show_progress:
        typer.echo(f"Booting {name} ({plugin})...", err=True)
        with BootProgress(api, name, lambda line: typer.echo(line, err=True)) as progress:
            vm = api.post("/api/v1/vms", body, params=params)
            progress.finish(vm)
    else:
        vm = api.post("/api/v1/vms", body, params=params)
    emit(vm, output, VM_COLUMNS)
    if output is Format.TABLE and vm["status"] == "running":
        typer.echo(f"{name} is running. Reach it:")
        for line in how_to_reach(vm):
            typer.echo(line)


def published_ports(specs: list[str], exposes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`exposes` with each `--publish` spec applied: one naming a guest port (and protocol)
    an entry already exposes sets its host port, any other is added."""
    merged = [dict(entry) for entry in exposes]
    for spec in specs:
        rule, _, protocol = spec.partition("/")
        host, _, guest = rule.rpartition(":")
        protocol = protocol or "tcp"
        if protocol not in ("tcp", "udp") or not guest.isdigit() or (host and not host.isdigit()):
            usage_error(f"--publish {spec!r}: use HOST:GUEST[/tcp|udp] or GUEST, e.g. 8080:80")
        guest_port, host_port = int(guest), int(host) if host else None
        for entry in merged:
            if entry["port"] == guest_port and entry.get("protocol", "tcp") == protocol:
                entry["host_port"] = host_port
                break
        else:
            merged.append({"port": guest_port, "host_port": host_port, "protocol": protocol})
    return merged


def _manifest_exposes(document: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The exposes a VM would have without --publish: its config file's, else the plugin's."""
    if document.get("expose") is not None:
        return list(document["expose"])
    return list((manifest.get("network") or {}).get("expose") or [])


def read_text(path: Path) -> str:
    """A text file's content; errors name the file."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {path}: {error}")


def read_document(path: Path) -> Any:
    """A JSON or YAML file's content; errors name the file."""
    try:
        return yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    except yaml.YAMLError as error:
        fail(f"{path} is not valid JSON or YAML: {error}")


def _life_cycle(action: str, name: str, output: Format) -> None:
    emit(client().post(f"/api/v1/vms/{name}/{action}"), output, VM_COLUMNS)


@vms_app.command("start")
def vms_start(name: str, output: OutputOption = Format.TABLE) -> None:
    """Boot a stopped VM."""
    _life_cycle("start", name, output)


@vms_app.command("stop")
def vms_stop(name: str, output: OutputOption = Format.TABLE) -> None:
    """Stop a VM (through its agent first)."""
    _life_cycle("stop", name, output)


@vms_app.command("restart")
def vms_restart(name: str, output: OutputOption = Format.TABLE) -> None:
    """Stop, then start (applies a changed config)."""
    _life_cycle("restart", name, output)


@vms_app.command("delete")
def vms_delete(name: str) -> None:
    """Stop (if running) and delete a VM."""
    client().delete(f"/api/v1/vms/{name}")
    typer.echo(f"vm {name} deleted")
