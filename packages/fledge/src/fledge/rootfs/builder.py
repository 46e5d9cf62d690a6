"""``fledge build`` for ``strategy = "oci_rootfs"``: an OCI image turned into a root disk.

Pipeline: resolve the image digest → cache check → fetch (verified blobs) → apply the layers
into a staging folder → ``[mappings]`` → disk image (ext4, squashfs, xfs or btrfs) → plugin
manifest (the image config as the workload) → both moved into the output folder.

- Everything is built in ``<output>/.fledge-rootfs-*``, on the output's file system, so the
  final ``os.replace`` never crosses devices; it is removed afterwards whatever happens
  (``FLEDGE_KEEP_TEMP=1`` keeps it for debugging).
- The guest agent is not put into the disk: the boot initramfs that volantd gives rootfs
  plugins carries kestrel and its Python runtime and keeps them in a tmpfs after
  switch_root. The disk holds the image, the mappings and nothing else, and nothing on the
  build host writes to it after the build.
- A build whose inputs are unchanged (image manifest digest, platform, fledge.toml,
  manifest template, mapped files, name/version, fledge version, SOURCE_DATE_EPOCH) finds
  its key in ``plugin.build.json`` beside the outputs and returns at once ("cache hit")
  without touching them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluginspec import FledgeConfig, PluginManifest, SpecError, load_manifest
from pluginspec.fledge_config import DEFAULT_AGENT, ImageSource

from .. import __version__
from ..cache import default_cache_dir
from ..errors import FledgeError
from ..mappings import mapping_entries
from ..plugin import rootfs_manifest
from .disk import DiskImage, build_disk_image
from .imageconfig import image_runtime
from .staging import Inode, StagingTree

if TYPE_CHECKING:
    from ..initramfs import BuildProgress
    from ..oci.image import PulledImage

ARTIFACT_NAMES = {"ext4": "plugin.img", "xfs": "plugin.img", "btrfs": "plugin.img"}
SQUASHFS_NAME = "plugin.squashfs"
MANIFEST_NAME = "plugin.manifest.json"
STAMP_NAME = "plugin.build.json"
DEFAULT_PLATFORM = "linux/amd64"

FetchImage = Callable[..., "PulledImage"]
"""``fledge.oci.fetch_image``'s signature: (source, *, cache_dir, platform, creds,
insecure_http, progress) -> PulledImage."""
ResolveDigest = Callable[..., str]
"""``fledge.oci.resolve_digest``'s signature: (source, *, cache_dir, platform, creds,
insecure_http) -> manifest digest."""


@dataclass(frozen=True)
class PullOptions:
    """How the image is fetched (``fledge build --platform/--creds/--insecure-http``)."""

    platform: str = DEFAULT_PLATFORM
    creds: str | None = None
    """``USER:PASS``; None: docker's config.json."""
    insecure_http: bool = False


@dataclass(frozen=True)
class RootfsBuildResult:
    """What an oci_rootfs build produced (or found already built)."""

    artifact: Path
    manifest_path: Path
    manifest: PluginManifest
    sha256: str
    size: int
    fstype: str
    image: str
    image_digest: str
    platform: str
    content_bytes: int
    entries: int
    duration_s: float
    cached: bool = False
    notes: tuple[str, ...] = field(default=())


def artifact_name(fstype: str) -> str:
    """``plugin.squashfs`` or ``plugin.img`` (ext4, xfs, btrfs)."""
    return SQUASHFS_NAME if fstype == "squashfs" else ARTIFACT_NAMES[fstype]


def source_date_epoch(image_config: dict[str, Any] | None = None) -> int | None:
    """``$SOURCE_DATE_EPOCH``, else the image's ``created`` time, else None."""
    explicit = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if explicit:
        try:
            return int(explicit)
        except ValueError:
            raise FledgeError(
                f"SOURCE_DATE_EPOCH={explicit!r} is not a number of seconds"
            ) from None
    created = (image_config or {}).get("created")
    if isinstance(created, str) and created:
        try:
            return max(0, int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()))
        except ValueError:
            return None
    return None


class RootfsBuilder:
    """Builds one oci_rootfs config (``config_dir``: where relative paths start).

    ``fetch`` and ``resolve`` default to :func:`fledge.oci.fetch_image` and
    :func:`fledge.oci.resolve_digest`; tests hand in their own (dependency injection).
    """

    def __init__(
        self,
        config: FledgeConfig,
        config_dir: Path,
        *,
        config_bytes: bytes = b"",
        cache_dir: Path | None = None,
        pull: PullOptions | None = None,
        progress: BuildProgress | None = None,
        fetch: FetchImage | None = None,
        resolve: ResolveDigest | None = None,
    ) -> None:
        if config.strategy != "oci_rootfs":
            raise FledgeError(f"RootfsBuilder needs strategy 'oci_rootfs', not {config.strategy}")
        assert config.filesystem is not None  # pluginspec defaults it for oci_rootfs
        self.config = config
        self.filesystem = config.filesystem
        self.config_dir = config_dir
        self.config_bytes = config_bytes
        self.cache_dir = cache_dir or default_cache_dir()
        self.pull = pull or PullOptions()
        self.progress = progress
        self._fetch = fetch
        self._resolve = resolve
        self.notes: list[str] = []

    # --- helpers ---------------------------------------------------------------------------

    def _step(self, title: str) -> None:
        if self.progress is not None:
            self.progress.step(title)

    def _note(self, message: str) -> None:
        self.notes.append(message)
        if self.progress is not None:
            self.progress.note(message)

    def _source(self) -> ImageSource:
        source = self.config.source
        if source.dockerfile:
            raise FledgeError(
                "source.dockerfile is not supported by fledge build yet: build the image with "
                "docker or buildah and use source.image (a registry reference, "
                "oci-layout:PATH or docker-archive:PATH)"
            )
        image = source.image_source
        assert image is not None  # pluginspec requires image or dockerfile for oci_rootfs
        if image.transport != "registry":  # a local path: relative to the config's folder
            path = Path(image.reference).expanduser()
            image = replace(image, reference=str(self.config_dir / path))
        return image

    def fetch(self, source: ImageSource) -> PulledImage:
        from ..oci.image import fetch_image

        fetch = self._fetch or fetch_image
        return fetch(
            source,
            cache_dir=self.cache_dir,
            platform=self.pull.platform,
            creds=self.pull.creds,
            insecure_http=self.pull.insecure_http,
            progress=self.progress,
        )

    def resolve_digest(self, source: ImageSource) -> str:
        """The manifest digest a fetch would use (cheap: no layers are downloaded)."""
        from ..oci.image import resolve_digest

        resolve = self._resolve or resolve_digest
        return resolve(
            source,
            cache_dir=self.cache_dir,
            platform=self.pull.platform,
            creds=self.pull.creds,
            insecure_http=self.pull.insecure_http,
        )

    def cache_key(
        self,
        manifest_digest: str,
        *,
        template: Path | None,
        name: str | None,
        version: str | None,
        output_dir: Path,
    ) -> str:
        """sha256 of everything the outputs depend on (all in this one place)."""
        digest = hashlib.sha256()

        def add(label: str, data: bytes) -> None:
            digest.update(f"{label}\0{len(data)}\0".encode())
            digest.update(data)

        add("fledge", __version__.encode())
        add("image", manifest_digest.encode())
        add("platform", self.pull.platform.encode())
        add("fledge.toml", self.config_bytes)
        add("template", template.read_bytes() if template is not None else b"")
        add("name", (name or "").encode())
        add("version", (version or "").encode())
        add("epoch", os.environ.get("SOURCE_DATE_EPOCH", "").encode())
        for source, destination in self.config.mappings.items():
            add("mapping", f"{source}\0{destination}".encode())
            for entry in mapping_entries(
                source, destination, self.config_dir, exclude=[output_dir]
            ):
                add(entry.kind, f"{entry.path}\0{entry.mode:o}\0{entry.target}".encode())
                add("data", entry.data)
        return digest.hexdigest()

    # --- the build -------------------------------------------------------------------------

    def build(
        self,
        output_dir: Path,
        *,
        manifest_template: Path | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> RootfsBuildResult:
        """Build (or find up to date) ``output_dir/plugin.img|plugin.squashfs`` and
        ``output_dir/plugin.manifest.json``."""
        started = time.monotonic()
        self.notes = []
        output_dir = output_dir.absolute()
        source = self._source()
        if self.config.agent is not None and self.config.agent != DEFAULT_AGENT:
            self._note(
                "[agent] is not used by oci_rootfs builds: kestrel comes with the boot "
                "initramfs volantd gives rootfs plugins, not from the disk"
            )
        template = self._template(manifest_template)
        artifact = output_dir / artifact_name(self.filesystem.type)

        self._step(f"resolve {source}")
        resolved = self.resolve_digest(source)
        key = self.cache_key(
            resolved, template=template, name=name, version=version, output_dir=output_dir
        )
        hit = self._cached(output_dir, artifact, key, started)
        if hit is not None:
            return hit

        self._step(f"fetch {source} ({self.pull.platform})")
        pulled = self.fetch(source)
        if pulled.manifest_digest != resolved:  # the tag moved between the two requests
            key = self.cache_key(
                pulled.manifest_digest,
                template=template,
                name=name,
                version=version,
                output_dir=output_dir,
            )
        runtime = image_runtime(pulled.config)
        for message in runtime.notes:
            self._note(message)
        epoch = source_date_epoch(pulled.config)

        output_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".fledge-rootfs-", dir=output_dir))
        try:
            staging = scratch / "rootfs"
            staging.mkdir()
            with StagingTree(staging) as tree:
                self._step(f"unpack {len(pulled.layers)} layer(s)")
                from ..oci.unpack import apply_layers

                apply_layers(pulled.layers, tree, note=self._note)
                self._step(f"mappings ({len(self.config.mappings)})")
                self._apply_mappings(tree, output_dir, epoch)
                tree.finish()
                self._step(f"{self.filesystem.type} image")
                disk = build_disk_image(
                    tree,
                    scratch / artifact.name,
                    self.filesystem,
                    key=key,
                    epoch=epoch,
                    note=self._note,
                )
                entries = len(tree.table)
            self._step("plugin manifest")
            checksum = _sha256_file(disk.path)
            if not runtime.entrypoint and not runtime.cmd:
                self._note(
                    "the image has no Entrypoint or Cmd: set [workload] entrypoint in "
                    "manifest.toml, or the VM has nothing to run"
                )
            if template is None and name is None:
                self._note(
                    "no manifest.toml next to the config: the manifest gets the folder's name; "
                    "add manifest.toml or pass --name/--version"
                )
            manifest = rootfs_manifest(
                artifact=artifact,
                sha256=checksum,
                fstype=disk.fstype,
                image=runtime,
                image_source=pulled.source,
                image_digest=pulled.manifest_digest,
                template=template,
                default_name=self.config_dir.resolve().name,
                name=name,
                version=version,
            )
            manifest_path = output_dir / MANIFEST_NAME
            staged_manifest = scratch / MANIFEST_NAME
            staged_manifest.write_text(manifest.to_json())
            os.chmod(staged_manifest, 0o644)
            os.chmod(disk.path, 0o644)
            self._install(disk, artifact, staged_manifest, manifest_path)
            self._write_stamp(
                output_dir,
                artifact,
                key,
                checksum,
                pulled,
                {"content_bytes": disk.content_bytes, "entries": entries},
            )
        finally:
            if not os.environ.get("FLEDGE_KEEP_TEMP"):
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                self._note(f"FLEDGE_KEEP_TEMP: the staging folder is kept in {scratch}")
        return RootfsBuildResult(
            artifact=artifact,
            manifest_path=manifest_path,
            manifest=manifest,
            sha256=checksum,
            size=disk.size,
            fstype=disk.fstype,
            image=pulled.source,
            image_digest=pulled.manifest_digest,
            platform=pulled.platform,
            content_bytes=disk.content_bytes,
            entries=entries,
            duration_s=time.monotonic() - started,
            notes=tuple(self.notes),
        )

    def _template(self, explicit: Path | None) -> Path | None:
        if explicit is not None:
            return explicit
        default = self.config_dir / "manifest.toml"
        return default if default.is_file() else None

    def _apply_mappings(self, tree: StagingTree, output_dir: Path, epoch: int | None) -> None:
        """Mapped host files into the staging tree, root-owned, through the image's own
        symlinks only where they resolve inside the root."""
        mtime_ns = (epoch or 0) * 1_000_000_000
        for source, destination in self.config.mappings.items():
            what = f"mapping {source!r} = {destination!r}"
            for entry in mapping_entries(
                source, destination, self.config_dir, exclude=[output_dir]
            ):
                path = tree.resolve_inside(entry.path, what)
                if entry.kind == "dir":
                    inode = Inode(stat.S_IFDIR | entry.mode, mtime_ns=mtime_ns)
                    tree.make_directory(path, inode, what)
                elif entry.kind == "symlink":
                    inode = Inode(stat.S_IFLNK | 0o777, mtime_ns=mtime_ns)
                    tree.make_symlink(path, entry.target, inode, what)
                else:
                    inode = Inode(stat.S_IFREG | entry.mode, mtime_ns=mtime_ns)
                    tree.write_file(path, inode, [entry.data], what)

    def _cached(
        self, output_dir: Path, artifact: Path, key: str, started: float
    ) -> RootfsBuildResult | None:
        """The previous build's result when its key matches and its outputs are intact."""
        try:
            stamp = json.loads((output_dir / STAMP_NAME).read_text())
            info = artifact.stat()
            manifest_path = output_dir / MANIFEST_NAME
            manifest = load_manifest(manifest_path)
        except (OSError, ValueError, SpecError):
            return None
        if (
            not isinstance(stamp, dict)
            or stamp.get("key") != key
            or stamp.get("artifact") != artifact.name
            or stamp.get("size") != info.st_size
            or stamp.get("mtime_ns") != info.st_mtime_ns
        ):
            return None
        self._note(f"cache hit: {artifact} is up to date (same image digest and inputs)")
        return RootfsBuildResult(
            artifact=artifact,
            manifest_path=manifest_path,
            manifest=manifest,
            sha256=str(stamp.get("sha256", "")),
            size=info.st_size,
            fstype=self.filesystem.type,
            image=str(stamp.get("image", "")),
            image_digest=str(stamp.get("image_digest", "")),
            platform=str(stamp.get("platform", "")),
            content_bytes=int(stamp.get("content_bytes", 0)),
            entries=int(stamp.get("entries", 0)),
            duration_s=time.monotonic() - started,
            cached=True,
            notes=tuple(self.notes),
        )

    def _install(
        self, disk: DiskImage, artifact: Path, staged_manifest: Path, manifest_path: Path
    ) -> None:
        """Rename both outputs into place (same file system: the scratch folder is inside
        the output folder); a stale artifact of the other kind is removed."""
        try:
            (artifact.parent / STAMP_NAME).unlink(missing_ok=True)
            os.replace(disk.path, artifact)
            os.replace(staged_manifest, manifest_path)
            for other in {SQUASHFS_NAME, *ARTIFACT_NAMES.values()} - {artifact.name}:
                (artifact.parent / other).unlink(missing_ok=True)
        except OSError as exc:
            raise FledgeError(f"cannot write {artifact.parent}: {exc.strerror}") from None

    def _write_stamp(
        self,
        output_dir: Path,
        artifact: Path,
        key: str,
        checksum: str,
        pulled: PulledImage,
        extra: dict[str, int],
    ) -> None:
        info = artifact.stat()
        stamp: dict[str, Any] = {
            **extra,
            "key": key,
            "artifact": artifact.name,
            "size": info.st_size,
            "mtime_ns": info.st_mtime_ns,
            "sha256": checksum,
            "image": pulled.source,
            "image_digest": pulled.manifest_digest,
            "platform": pulled.platform,
        }
        path = output_dir / STAMP_NAME
        partial = path.with_name(f".{STAMP_NAME}.partial")
        partial.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        os.replace(partial, path)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
