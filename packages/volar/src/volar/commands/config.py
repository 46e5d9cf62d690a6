"""`volar vms config get|set|history` and `volar vms scale`: the VM's versioned config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from volar.commands.vms import VM_COLUMNS, vms_app
from volar.context import OutputOption, client, fail, usage_error, vm_path
from volar.output import Format, emit

config_app = typer.Typer(no_args_is_help=True, help="A VM's versioned config.")
vms_app.add_typer(config_app, name="config")


@config_app.command("get")
def config_get(name: str, output: OutputOption = Format.TABLE) -> None:
    """The VM's current config and its version.

    By default YAML, with the version in a comment; -o json and -o yaml print
    {version, updated_at, config}.
    """
    current = client().get(vm_path(name, "/config"))
    if output is not Format.TABLE:
        emit(current, output)
        return
    typer.echo(f"# vm {name}: config version {current['version']}, {current['updated_at']}")
    typer.echo(yaml.safe_dump(current["config"], sort_keys=False), nl=False)


@config_app.command("set")
def config_set(
    name: str,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="a JSON or YAML patch (- for stdin)")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="key.path=value, the value as JSON or else a string"),
    ] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Patch the config: the given keys change, the rest stays.

    The new version applies on the next start (volar vms restart NAME). What `config get -o
    json` prints is accepted as a file.
    """
    if file is None and not settings:
        usage_error("give --file FILE and/or --set key.path=value")
    patch: dict[str, Any] = _read_patch(file) if file is not None else {}
    for setting in settings or []:
        key, sep, text = setting.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            usage_error(f"--set takes key.path=value (got {setting!r})")
        _set_path(patch, key.split("."), _parse_value(text))
    api = client()
    current = api.get(vm_path(name, "/config"))["config"] if "plugin" in patch else {}
    if "plugin" in patch and patch["plugin"] == current.get("plugin"):
        del patch["plugin"]  # a whole config fed back: its unchanged plugin is no change
    updated = api.patch(vm_path(name, "/config"), patch)
    if output is not Format.TABLE:
        emit(updated, output)
        return
    typer.echo(
        f"vm {name} config updated to version {updated['version']}; it applies on the next "
        f"start (volar vms restart {name})"
    )


def _read_patch(file: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as error:
        fail(f"cannot read {file}: {error.strerror or error}")
    try:
        document = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as error:
        fail(f"{file} is not JSON or YAML: {str(error).splitlines()[0]}")
    if not isinstance(document, dict):
        fail(f"{file} must hold an object of config fields")
    if "config" in document and set(document) <= {"config", "version", "updated_at", "id"}:
        document = document["config"]  # the envelope `config get -o json` prints
        if not isinstance(document, dict):
            fail(f"{file}: config must be an object")
    return document


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _set_path(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[keys[-1]] = value


@config_app.command("history")
def config_history(
    name: str,
    limit: Annotated[int, typer.Option(min=0, help="newest N versions (0: all)")] = 0,
    output: OutputOption = Format.TABLE,
) -> None:
    """Every config version, newest first."""
    params = {"limit": limit} if limit else {}
    versions = client().get(vm_path(name, "/config/history"), params=params)
    if output is not Format.TABLE:
        emit(versions, output)
        return
    rows = [
        {
            "version": entry["version"],
            "updated_at": entry["updated_at"],
            "cpus": (entry["config"].get("resources") or {}).get("cpu_cores"),
            "memory": (entry["config"].get("resources") or {}).get("memory_mb"),
        }
        for entry in versions
    ]
    columns = [("VERSION", "version"), ("UPDATED", "updated_at"), ("CPUS", "cpus"),
               ("MEMORY", "memory")]  # fmt: skip
    emit(rows, output, columns)


@vms_app.command("scale")
def vms_scale(
    name: str,
    cpus: Annotated[int | None, typer.Option(min=1, help="vCPUs")] = None,
    memory: Annotated[int | None, typer.Option(min=1, help="memory in MiB")] = None,
    restart: Annotated[
        bool, typer.Option(help="restart a running VM now so the change applies")
    ] = False,
    output: OutputOption = Format.TABLE,
) -> None:
    """Change a VM's vCPUs and memory: on its next start, or now with --restart.

    A deployment's replicas are scaled with `volar deployments scale`.
    """
    if cpus is None and memory is None:
        usage_error("give --cpus and/or --memory (a deployment's replicas: deployments scale)")
    resources = {key: value for key, value in (("cpu_cores", cpus), ("memory_mb", memory))
                 if value is not None}  # fmt: skip
    api = client()
    updated = api.patch(vm_path(name, "/config"), {"resources": resources})
    applied = updated["config"]["resources"]
    vm = api.get(vm_path(name))
    note = f"it applies on the next start (volar vms restart {name}, or --restart)"
    if restart and vm["status"] in ("stopped", "pending"):
        note = f"vm {name} is {vm['status']}: it applies when it starts"
    elif restart:
        vm = api.post(vm_path(name, "/restart"))
        note = "restarted"
    elif vm["status"] in ("stopped", "pending"):
        note = "it applies when it starts"
    if output is not Format.TABLE:
        emit(vm, output, VM_COLUMNS)
        return
    typer.echo(
        f"vm {name}: {applied['cpu_cores']} vCPUs, {applied['memory_mb']} MiB "
        f"(config version {updated['version']}); {note}"
    )
