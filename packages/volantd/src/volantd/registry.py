"""Installed plugins: install (verifying every artifact into the cache), list, enable, remove.

A plugin is accepted only once each artifact its manifest names (initramfs, root disk, extra
disks) is in the content-addressed cache and matches its checksum; the store then records the
manifest and, per artifact, where its verified copy lives. VMs boot from those copies, never
from the original URL, so a changed or vanished source cannot alter an installed plugin.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from pluginspec import PluginManifest, SpecError, load_manifest, parse_manifest
from volantd.artifacts import DEFAULT_MAX_BYTES, ArtifactCache, CachedArtifact
from volantd.cloudinit.sources import inline_documents
from volantd.errors import VolantError
from volantd.store import ArtifactRecord, ConflictError, Database, PluginRecord

MANIFEST_MAX_BYTES = 1024 * 1024
OPENAPI_MAX_BYTES = 4 * 1024 * 1024
MANIFEST_TIMEOUT_S = 30.0


class RegistryError(VolantError):
    """A plugin cannot be installed or changed as asked."""


@dataclass(frozen=True)
class Artifact:
    """One artifact a manifest names: what it is for and where it comes from."""

    name: str  # "initramfs", "rootfs" or "disk:<name>"
    kind: str  # "initramfs", "rootfs" or "disk"
    source: str
    checksum: str | None
    format: str | None


def manifest_artifacts(manifest: PluginManifest) -> list[Artifact]:
    """The artifacts ``manifest`` needs, boot artifact first."""
    found = []
    if manifest.initramfs is not None:
        initramfs = manifest.initramfs
        found.append(
            Artifact("initramfs", "initramfs", initramfs.url, initramfs.checksum, initramfs.format)
        )
    if manifest.rootfs is not None:
        rootfs = manifest.rootfs
        found.append(Artifact("rootfs", "rootfs", rootfs.url, rootfs.checksum, rootfs.format))
    for disk in manifest.disks:
        if disk.source is None:  # a new empty disk, made per VM
            continue
        found.append(Artifact(f"disk:{disk.name}", "disk", disk.source, disk.checksum, disk.format))
    if manifest.openapi and not manifest.openapi.startswith(("http://", "https://")):
        # a file on the installing host: kept now, so serving it never reads host files
        found.append(Artifact("openapi", "openapi", manifest.openapi, None, None))
    return found


class PluginRegistry:
    """The plugins this volantd knows, backed by the store and the artifact cache."""

    def __init__(self, db: Database, cache: ArtifactCache) -> None:
        self.db = db
        self.cache = cache

    # -- reading a manifest -----------------------------------------------------------------

    async def read_source(self, source: str) -> tuple[PluginManifest, str]:
        """Load a manifest from a URL or a path on this host.

        Returns the manifest and where it came from (its URL, or its file's folder): relative
        locations resolve against it, and a file it names for ``openapi`` must lie under it.
        """
        if source.startswith(("http://", "https://")):
            text = await fetch_document(source, "the manifest")
            return parse_manifest(text, source=source), source
        path = source.removeprefix("file://")
        if not os.path.isabs(path):
            raise RegistryError(
                f"manifest path {source!r} is relative; give volantd an absolute path on its "
                "host (or send the manifest itself as the request body)"
            )
        manifest = await asyncio.to_thread(load_manifest, path, resolve_paths=True)
        return manifest, os.path.dirname(os.path.abspath(path))

    # -- installing -------------------------------------------------------------------------

    async def install(
        self, manifest: PluginManifest, *, origin: str | None = None, replace: bool = False
    ) -> PluginRecord:
        """Fetch and verify every artifact, then record the plugin (``replace``: over an
        installed one of the same name). ``origin`` is what :meth:`read_source` returned;
        None for a manifest sent as a request body."""
        existing = await asyncio.to_thread(self.db.plugins.find, manifest.name)
        if existing is not None and not replace:
            raise ConflictError(
                f"plugin {manifest.name!r} is already installed (version {existing.version}); "
                "install with replace=true to replace it"
            )
        if origin is not None and "://" in origin:
            manifest = resolve_against_url(manifest, origin)
        _check_openapi_file(manifest, origin)
        manifest = await inline_documents(manifest, origin)
        artifacts = manifest_artifacts(manifest)
        fetched = await asyncio.gather(*(self._fetch(artifact, manifest) for artifact in artifacts))
        record = PluginRecord(
            name=manifest.name,
            version=manifest.version,
            runtime=manifest.runtime,
            enabled=manifest.enabled,
            manifest=manifest.model_dump(mode="json"),
        )
        stored = [
            ArtifactRecord(
                plugin_name=manifest.name,
                version=manifest.version,
                name=artifact.name,
                kind=artifact.kind,
                source_url=artifact.source,
                sha256=cached.digest,
                format=artifact.format,
                size_bytes=cached.size,
                cache_path=cached.path,
            )
            for artifact, cached in zip(artifacts, fetched, strict=True)
        ]
        return await asyncio.to_thread(self.db.plugins.install, record, stored)

    async def _fetch(self, artifact: Artifact, manifest: PluginManifest) -> CachedArtifact:
        source = artifact.source
        if source.startswith(("http://", "https://")) and artifact.checksum is None:
            raise SpecError.single(
                f"a checksum is required for an artifact fetched over the network ({source}); "
                'add checksum = "sha256:<hex>"',
                _field(artifact),
                source=manifest.name,
            )
        if "://" not in source and not os.path.isabs(source):
            raise SpecError.single(
                f"{source!r} is a relative path, which means nothing to volantd when the "
                "manifest comes as a request body; use an absolute path or a URL, or install "
                "the manifest from its file",
                _field(artifact),
                source=manifest.name,
            )
        limit = OPENAPI_MAX_BYTES if artifact.kind == "openapi" else DEFAULT_MAX_BYTES
        return await self.cache.fetch(source, artifact.checksum, max_bytes=limit)

    # -- the rest of the life cycle ---------------------------------------------------------

    def installed(self) -> list[PluginRecord]:
        """Every installed plugin, by name."""
        return self.db.plugins.list()

    def get(self, name: str) -> PluginRecord:
        return self.db.plugins.get(name)

    def artifacts(self, name: str, version: str | None = None) -> list[ArtifactRecord]:
        """The plugin's verified artifacts (all versions installed so far unless ``version``)."""
        self.db.plugins.get(name)
        return self.db.artifacts.list(name, version)

    def current_artifacts(self, record: PluginRecord) -> list[ArtifactRecord]:
        """The artifacts of the installed version."""
        return self.db.artifacts.list(record.name, record.version)

    def set_enabled(self, name: str, enabled: bool) -> PluginRecord:
        return self.db.plugins.set_enabled(name, enabled)

    def remove(self, name: str) -> None:
        """Forget the plugin (refused while VMs use it); cached blobs no other plugin uses go."""
        self.db.plugins.get(name)
        users = self.db.plugins.in_use_by(name)
        if users:
            shown = ", ".join(users[:10]) + (" ..." if len(users) > 10 else "")
            raise ConflictError(
                f"plugin {name!r} is used by {len(users)} VM(s): {shown}; delete them first"
            )
        blobs = {record.sha256 for record in self.db.artifacts.list(name)}
        self.db.plugins.remove(name)
        still_used = {record.sha256 for plugin in self.db.plugins.list()
                      for record in self.db.artifacts.list(plugin.name)}  # fmt: skip
        for digest in blobs - still_used:
            self.cache.remove(digest)


def resolve_against_url(manifest: PluginManifest, base_url: str) -> PluginManifest:
    """A copy whose relative artifact locations are made absolute against ``base_url``."""
    data = manifest.model_dump(mode="json")

    def resolve(location: str | None) -> str | None:
        if location is None or "://" in location:
            return location
        return urljoin(base_url, location)

    for key in ("initramfs", "rootfs"):
        if data.get(key):
            data[key]["url"] = resolve(data[key]["url"])
    for disk in data["disks"]:
        disk["source"] = resolve(disk["source"])
    data["openapi"] = resolve(data["openapi"])
    return parse_manifest(data, source=base_url)


def _check_openapi_file(manifest: PluginManifest, origin: str | None) -> None:
    """A local ``openapi`` file is served to API users later, so it must be one the plugin
    brought along: inside the folder of the manifest file it was installed from."""
    location = manifest.openapi
    if not location or ("://" in location and not location.startswith("file://")):
        return
    path = os.path.realpath(location.removeprefix("file://"))
    folder = os.path.realpath(origin) if origin and "://" not in origin else None
    if folder is None or os.path.commonpath([folder, path]) != folder:
        raise SpecError.single(
            f"{location!r} is a file outside the plugin's folder; volantd serves this document "
            "to API users, so it takes only a URL, or a file next to the manifest when the "
            "manifest is installed from its file (source)",
            "openapi",
            source=manifest.name,
        )


def _field(artifact: Artifact) -> str:
    if artifact.kind == "disk":
        return f"disks[{artifact.name.removeprefix('disk:')}].source"
    if artifact.kind == "openapi":
        return "openapi"
    return f"{artifact.kind}.url"


async def fetch_document(
    url: str,
    what: str,
    *,
    max_bytes: int = MANIFEST_MAX_BYTES,
    timeout_s: float = MANIFEST_TIMEOUT_S,
) -> bytes:
    """GET a small document (a manifest, an OpenAPI file) whole, within a size and time limit;
    ``what`` names it in errors."""
    try:
        async with (
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise RegistryError(f"fetching {what} {url} failed: HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise RegistryError(f"{what} at {url} is larger than {max_bytes // 1024} KiB")
            return bytes(body)
    except httpx.TimeoutException:
        raise RegistryError(f"fetching {what} {url} took longer than {timeout_s:g} s") from None
    except httpx.HTTPError as error:
        raise RegistryError(f"fetching {what} {url} failed: {error}") from None
