"""``/api/v1/plugins``: install, list, show, enable/disable, remove, and their artifacts.

Paths and shapes follow upstream where clients depend on them (``GET /plugins`` still has
``plugins``: the names), with the details upstream lacked alongside (``items``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel

from pluginspec import parse_manifest
from volantd.api.errors import APIError, Conflict, NotFound
from volantd.registry import PluginRegistry
from volantd.store import ArtifactRecord, PluginRecord

router = APIRouter(prefix="/api/v1/plugins", tags=["plugins"])

INSTALL_BODY_MAX_BYTES = 1024 * 1024


class EnabledBody(BaseModel):
    enabled: bool


def registry(request: Request) -> PluginRegistry:
    registry: PluginRegistry = request.app.state.services.plugins
    return registry


def artifact_view(record: ArtifactRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "kind": record.kind,
        "version": record.version,
        "source_url": record.source_url,
        "sha256": record.sha256,
        "format": record.format,
        "size_bytes": record.size_bytes,
        "path": str(record.cache_path),
        "created_at": record.created_at.isoformat(),
    }


def plugin_view(record: PluginRecord, artifacts: list[ArtifactRecord]) -> dict[str, Any]:
    return {
        "name": record.name,
        "version": record.version,
        "runtime": record.runtime,
        "enabled": record.enabled,
        "installed_at": record.installed_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "artifacts": [artifact_view(artifact) for artifact in artifacts],
    }


@router.get("")
def list_plugins(request: Request) -> dict[str, Any]:
    """Installed plugins sorted by name: ``plugins`` (names, as upstream) and ``items``."""
    plugins = registry(request)
    records = plugins.installed()
    return {
        "plugins": [record.name for record in records],
        "items": [plugin_view(record, plugins.current_artifacts(record)) for record in records],
    }


@router.post("", status_code=201)
async def install_plugin(
    request: Request,
    body: Annotated[
        dict[str, Any],
        Body(
            description='A plugin manifest, or {"source": URL or absolute path on the volantd '
            "host} to fetch it from",
        ),
    ],
    replace: Annotated[bool, Query(description="replace an installed plugin of that name")] = False,
) -> dict[str, Any]:
    """Install a plugin: every artifact is fetched into the cache and verified first."""
    if len(json.dumps(body)) > INSTALL_BODY_MAX_BYTES:
        raise APIError("the manifest is larger than 1 MiB", 413)
    plugins = registry(request)
    origin = None
    if set(body) == {"source"}:
        if not isinstance(body["source"], str) or not body["source"]:
            raise APIError("source: must be a URL or an absolute path on the volantd host", 422)
        manifest, origin = await plugins.read_source(body["source"])
    else:
        manifest = parse_manifest(body)
    record = await plugins.install(manifest, origin=origin, replace=replace)
    return plugin_view(record, plugins.current_artifacts(record))


@router.get("/{name}")
def get_plugin(request: Request, name: str) -> dict[str, Any]:
    """The plugin's manifest, enabled or not (as upstream)."""
    manifest: dict[str, Any] = registry(request).get(name).manifest
    return manifest


@router.get("/{name}/manifest")
def get_plugin_manifest(request: Request, name: str) -> dict[str, Any]:
    """The manifest of an enabled plugin (409 while disabled)."""
    record = registry(request).get(name)
    if not record.enabled:
        raise Conflict(f"plugin {name!r} is disabled")
    manifest: dict[str, Any] = record.manifest
    return manifest


@router.get("/{name}/info")
def get_plugin_info(request: Request, name: str) -> dict[str, Any]:
    """Version, runtime, enabled, install times and the verified artifacts."""
    plugins = registry(request)
    record = plugins.get(name)
    return plugin_view(record, plugins.current_artifacts(record))


@router.post("/{name}/enabled")
def set_plugin_enabled(request: Request, name: str, body: EnabledBody) -> dict[str, Any]:
    """Enable or disable creating VMs from the plugin (existing VMs are not touched)."""
    plugins = registry(request)
    record = plugins.set_enabled(name, body.enabled)
    return plugin_view(record, plugins.current_artifacts(record))


@router.delete("/{name}", status_code=204)
async def remove_plugin(
    request: Request,
    name: str,
    force: Annotated[bool, Query(description="stop and delete the VMs that use it first")] = False,
) -> Response:
    """Remove the plugin (409 while VMs use it, unless ``force``) and the cached artifacts
    only it used."""
    plugins = registry(request)
    if force:
        plugins.get(name)
        for vm in await asyncio.to_thread(plugins.db.plugins.in_use_by, name):
            await request.app.state.services.vms.delete(vm)
    await asyncio.to_thread(plugins.remove, name)
    return Response(status_code=204)


@router.get("/{name}/artifacts")
def list_artifacts(
    request: Request, name: str, version: Annotated[str | None, Query()] = None
) -> list[dict[str, Any]]:
    """The plugin's verified artifacts (newest version first)."""
    return [artifact_view(record) for record in registry(request).artifacts(name, version)]


@router.get("/{name}/artifacts/{artifact}")
def get_artifact(
    request: Request, name: str, artifact: str, version: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    """One artifact by name (``initramfs``, ``rootfs``, ``disk:<name>``)."""
    for record in registry(request).artifacts(name, version):
        if record.name == artifact:
            return artifact_view(record)
    raise NotFound(f"plugin {name!r} has no artifact {artifact!r}")
