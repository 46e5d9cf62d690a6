"""An OCI image config turned into the plugin manifest's workload, as ``docker run`` reads it.

- ``entrypoint`` is the image's Entrypoint and ``args`` its Cmd; an image without an
  Entrypoint runs its Cmd (``entrypoint = []``, ``args = Cmd``).
- ``env`` from ``Env`` (``KEY=VALUE`` items; a later duplicate wins), ``workdir`` from
  ``WorkingDir``, ``user`` from ``User``, ``stop_signal`` from ``StopSignal``.
- ``ExposedPorts`` (``"80/tcp"``, ``"53/udp"``) become ``network.expose`` entries with no
  fixed host port (the host picks one, as ``docker run -P``).

:func:`merge_workload` lays a manifest template's ``[workload]`` over that, field by field,
with Docker's rule for the command: a template ``entrypoint`` drops the image's Cmd (as
``docker run --entrypoint``) unless the template gives ``args`` too; template ``args`` alone
replace the Cmd and keep the Entrypoint; template ``env`` keys override the image's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import FledgeError

_PORT = re.compile(r"(\d{1,5})(?:/([A-Za-z]+))?")


@dataclass(frozen=True)
class ImageRuntime:
    """What an image config says about running the image."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    stop_signal: str | None = None
    exposed: list[tuple[int, str]] = field(default_factory=list)
    """(port, protocol), sorted."""
    notes: tuple[str, ...] = ()


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # not valid OCI, but seen in hand-made configs
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FledgeError(f"image config: {what} must be a list of strings, got {value!r}")
    return list(value)


def image_runtime(image_config: Mapping[str, Any]) -> ImageRuntime:
    """Read the ``config`` object of a whole image config JSON document."""
    config = image_config.get("config") or {}
    if not isinstance(config, Mapping):
        raise FledgeError("image config: 'config' is not a JSON object")
    notes: list[str] = []
    env: dict[str, str] = {}
    for item in _strings(config.get("Env"), "Env"):
        name, sep, value = item.partition("=")
        if not name or "\x00" in item:
            notes.append(f"image Env entry {item!r} skipped (not NAME=VALUE)")
            continue
        env[name] = value if sep else ""
    exposed: set[tuple[int, str]] = set()
    ports = config.get("ExposedPorts") or {}
    if not isinstance(ports, Mapping):
        raise FledgeError("image config: ExposedPorts must be an object like {'80/tcp': {}}")
    for key in ports:
        match = _PORT.fullmatch(str(key).strip())
        protocol = (match.group(2) or "tcp").lower() if match else ""
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            notes.append(f"image ExposedPorts entry {key!r} skipped (not PORT[/PROTOCOL])")
        elif protocol not in ("tcp", "udp"):
            notes.append(f"image exposes {key}: only tcp and udp ports can be published")
        else:
            exposed.add((int(match.group(1)), protocol))

    def text(name: str) -> str | None:
        value = config.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise FledgeError(f"image config: {name} must be a string, got {value!r}")
        return value.strip()

    return ImageRuntime(
        entrypoint=_strings(config.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(config.get("Cmd"), "Cmd"),
        env=env,
        workdir=text("WorkingDir"),
        user=text("User"),
        stop_signal=text("StopSignal"),
        exposed=sorted(exposed),
        notes=tuple(notes),
    )


def merge_workload(image: ImageRuntime, template: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest ``workload`` table: the image's runtime under the template's
    ``[workload]`` (``template``: the fields the template sets, None when it has none; an
    empty ``entrypoint`` counts as not set)."""
    given = {key: value for key, value in (template or {}).items() if value is not None}
    if not given.get("entrypoint"):
        given.pop("entrypoint", None)
    workload: dict[str, Any] = dict(given)
    if "entrypoint" in given:
        workload["args"] = given.get("args", [])
    else:
        workload["entrypoint"] = list(image.entrypoint)
        workload["args"] = given["args"] if "args" in given else list(image.cmd)
    workload["env"] = {**image.env, **(given.get("env") or {})}
    for key, value in (
        ("workdir", image.workdir),
        ("user", image.user),
        ("stop_signal", image.stop_signal),
    ):
        if given.get(key) is None and value is not None:
            workload[key] = value
    return workload


def expose_entries(image: ImageRuntime) -> list[dict[str, Any]]:
    """``network.expose`` entries for the image's ExposedPorts."""
    return [{"port": port, "protocol": protocol} for port, protocol in image.exposed]
