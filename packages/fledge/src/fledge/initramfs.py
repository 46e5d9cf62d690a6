"""``fledge build`` for ``strategy = "initramfs"``: assemble the image, write it and its manifest.

The image is assembled in memory as archive entries (no staging tree, no root needed):
skeleton → busybox → init (compiled ``init.c``, a custom file, or nothing) → agent and guest
Python runtime (default mode) → mappings, in the config's order. It is written as a sorted
newc archive with fixed mtimes and root ownership, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import posixpath
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pluginspec import FledgeConfig, PluginManifest, SpecError, load_fledge_config
from pluginspec.cpio import CpioEntry, compress, cpio_bytes

from .agent import AGENT_PATH, fetch_agent
from .busybox import busybox_entries, resolve_busybox
from .cache import default_cache_dir
from .errors import FledgeError
from .initc import build_init
from .mappings import mapping_entries
from .plugin import plugin_manifest
from .skeleton import skeleton_entries
from .sources import read_host_file
from .tree import ImageTree, guest_path

if TYPE_CHECKING:
    from .rootfs.builder import RootfsBuildResult

ARTIFACT_NAMES = {"zstd": "plugin.cpio.zst", "gzip": "plugin.cpio.gz", "none": "plugin.cpio"}
MANIFEST_NAME = "plugin.manifest.json"
INIT_PATH = "/init"
DEFAULT_GUEST_PYTHON = "/usr/bin/python3"


class BuildProgress(Protocol):
    """Receives the build's steps as they start, and notes worth showing the user."""

    def step(self, title: str) -> None: ...

    def note(self, message: str) -> None: ...


class _Quiet:
    def step(self, title: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class BuildOptions:
    """What ``fledge build`` takes besides the config."""

    output_dir: Path | None = None
    """Where the artifact and manifest go; default: ``build/`` next to the config."""
    manifest: Path | None = None
    """manifest.toml template; default: ``manifest.toml`` next to the config, if present."""
    name: str | None = None
    version: str | None = None
    cache_dir: Path | None = None
    """Default: :func:`fledge.cache.default_cache_dir`."""
    python: str | None = None
    """Host interpreter shipped as the guest runtime; default: ``fledge.runtime.GUEST_PYTHON``."""
    platform: str = "linux/amd64"
    """oci_rootfs: the image platform to pull (``OS/ARCH[/VARIANT]``)."""
    creds: str | None = None
    """oci_rootfs: registry credentials ``USER:PASS``; None: docker's config.json."""
    insecure_http: bool = False
    """oci_rootfs: allow a plain-HTTP registry."""


@dataclass(frozen=True)
class BuildResult:
    """What a build produced."""

    artifact: Path
    manifest_path: Path
    manifest: PluginManifest
    sha256: str
    """Hex digest of the artifact's bytes (as written, compressed)."""
    size: int
    uncompressed_size: int
    entries: int
    compression: str
    init_mode: str
    duration_s: float
    notes: tuple[str, ...] = field(default=())


def load_config(config_path: Path) -> FledgeConfig:
    """Read and validate ``fledge.toml``; every problem becomes one FledgeError."""
    if not config_path.is_file():
        raise FledgeError(
            f"config file not found: {config_path} (pass -c PATH/TO/fledge.toml)"
            if not config_path.exists()
            else f"config path {config_path} is not a file"
        )
    try:
        return load_fledge_config(config_path)
    except SpecError as exc:
        raise FledgeError(f"invalid config:\n{exc}") from None


def _runtime_module() -> Any:
    try:
        return importlib.import_module("fledge.runtime")
    except ImportError as exc:
        raise FledgeError(
            f"the guest Python runtime builder (fledge.runtime) is not available: {exc}"
        ) from None


class InitramfsBuilder:
    """Builds one initramfs config (``config_dir``: where relative paths start)."""

    def __init__(
        self,
        config: FledgeConfig,
        config_dir: Path,
        *,
        cache_dir: Path | None = None,
        python: str | None = None,
        progress: BuildProgress | None = None,
    ) -> None:
        if config.strategy != "initramfs":
            raise FledgeError(f"InitramfsBuilder needs strategy 'initramfs', not {config.strategy}")
        self.config = config
        self.config_dir = config_dir
        self.cache_dir = cache_dir or default_cache_dir()
        self.python = python
        self.progress: BuildProgress = progress or _Quiet()
        self.notes: list[str] = []

    @property
    def init_mode(self) -> str:
        return self.config.init_mode or "default"

    def _note(self, message: str) -> None:
        self.notes.append(message)
        self.progress.note(message)

    def _guest_python(self) -> str:
        if self.python:
            return self.python
        try:
            return str(_runtime_module().GUEST_PYTHON)
        except (FledgeError, AttributeError):
            return DEFAULT_GUEST_PYTHON

    def assemble(self, *, exclude: Iterable[Path] = ()) -> ImageTree:
        """Every entry of the image; ``exclude``: host paths mapped folders must skip."""
        tree = ImageTree()
        self.progress.step("skeleton")
        tree.add_all(skeleton_entries(), "skeleton")

        self.progress.step("busybox")
        busybox = resolve_busybox(self.config.source, self.config_dir, self.cache_dir)
        tree.add_all(busybox_entries(busybox), f"busybox {busybox}")

        deferred_init: str | None = None
        if self.init_mode == "default":
            self.progress.step("init (compile csrc/init.c)")
            init = build_init(self.cache_dir)
            tree.add(CpioEntry.file(INIT_PATH, init.read_bytes(), 0o755), "init.c")

            agent_config = self.config.agent
            assert agent_config is not None  # pluginspec defaults it in default mode
            self.progress.step(f"agent ({agent_config.source_strategy})")
            agent = fetch_agent(
                agent_config, self.config_dir, self.cache_dir, python=self._guest_python()
            )
            for note in agent.notes:
                self._note(note)
            tree.add(CpioEntry.file(AGENT_PATH, agent.data, 0o644), agent.origin)

            self.progress.step("python runtime")
            runtime = _runtime_module()
            entries: list[CpioEntry] = runtime.python_runtime_entries(
                self._guest_python(), cache_dir=self.cache_dir
            )
            tree.add_all(entries, "python runtime")
        elif self.init_mode == "custom":
            deferred_init = self._custom_init(tree)

        self.progress.step(f"mappings ({len(self.config.mappings)})")
        skip = tuple(exclude)
        for source, destination in self.config.mappings.items():
            tree.add_all(
                mapping_entries(source, destination, self.config_dir, exclude=skip),
                f"mapping {source!r}",
            )

        if deferred_init is not None:
            mapped = tree.get(deferred_init)
            if mapped is not None and mapped.kind == "file":
                entry = CpioEntry.file(INIT_PATH, mapped.data, 0o755)
                tree.add(entry, f"init.path {deferred_init!r}")
            else:  # not provided after all: the path names a host file
                self._install_host_init(tree, deferred_init)
        init_entry = tree.get(INIT_PATH)
        if init_entry is None or init_entry.kind not in ("file", "symlink"):
            raise FledgeError(
                "the image has no /init: with [init] none = true, map your PID 1 program to "
                "/init in [mappings]"
            )
        return tree

    def _custom_init(self, tree: ImageTree) -> str | None:
        """Install the custom init now (a host file) or return the image path to copy later."""
        assert self.config.init is not None and self.config.init.path is not None
        written = self.config.init.path
        self.progress.step("init (custom)")
        if written.startswith("/"):
            target = guest_path(written, "init.path")
            provided = any(
                posixpath.normpath(dest) == target
                or target.startswith(posixpath.normpath(dest).rstrip("/") + "/")
                for dest in self.config.mappings.values()
            )
            if provided:  # upstream's documented form: an in-image path a mapping provides
                return target
        self._install_host_init(tree, written)
        return None

    def _install_host_init(self, tree: ImageTree, written: str) -> None:
        _, data = read_host_file(written, self.config_dir, "init.path")
        tree.add(CpioEntry.file(INIT_PATH, data, 0o755), f"init.path {written!r}")

    def build(
        self,
        output_dir: Path,
        *,
        manifest_template: Path | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> BuildResult:
        """Assemble, write ``output_dir/plugin.cpio[.zst|.gz]`` and its plugin manifest."""
        started = time.monotonic()
        self.notes = []
        output_dir = output_dir.absolute()
        tree = self.assemble(exclude=[output_dir])

        assert self.config.initramfs is not None  # pluginspec defaults it for initramfs
        compression = self.config.initramfs.compression
        self.progress.step(f"archive ({len(tree)} entries, {compression})")
        raw = cpio_bytes(tree.entries())
        data = compress(raw, compression)
        artifact = output_dir / ARTIFACT_NAMES[compression]
        digest = hashlib.sha256(data).hexdigest()

        self.progress.step("plugin manifest")
        if manifest_template is None and not (self.config_dir / "manifest.toml").is_file():
            if name is None:
                self._note(
                    "no manifest.toml next to the config: the manifest gets the folder's name; "
                    "add manifest.toml or pass --name/--version"
                )
        elif manifest_template is None:
            manifest_template = self.config_dir / "manifest.toml"
        manifest = plugin_manifest(
            artifact=artifact,
            sha256=digest,
            compression=compression,
            template=manifest_template,
            default_name=self.config_dir.resolve().name,
            name=name,
            version=version,
        )
        manifest_path = output_dir / MANIFEST_NAME
        _write_atomically(artifact, data)  # both written only once both are known to be good
        _write_atomically(manifest_path, manifest.to_json().encode())
        return BuildResult(
            artifact=artifact,
            manifest_path=manifest_path,
            manifest=manifest,
            sha256=digest,
            size=len(data),
            uncompressed_size=len(raw),
            entries=len(tree),
            compression=compression,
            init_mode=self.init_mode,
            duration_s=time.monotonic() - started,
            notes=tuple(self.notes),
        )


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(partial, 0o644)
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise
    except OSError as exc:
        raise FledgeError(f"cannot write {path}: {exc.strerror}") from None


def build(
    config_path: Path,
    options: BuildOptions | None = None,
    progress: BuildProgress | None = None,
) -> BuildResult | RootfsBuildResult:
    """``fledge build``: load ``config_path`` and build what its strategy asks for
    (``initramfs``: :class:`BuildResult`; ``oci_rootfs``: ``RootfsBuildResult``)."""
    options = options or BuildOptions()
    quiet: BuildProgress = progress or _Quiet()
    quiet.step("config")
    config = load_config(config_path)
    if options.manifest is not None and not options.manifest.is_file():
        raise FledgeError(f"manifest template not found: {options.manifest}")
    config_dir = config_path.absolute().parent
    if config.strategy == "oci_rootfs":
        from .rootfs.builder import PullOptions, RootfsBuilder

        rootfs = RootfsBuilder(
            config,
            config_dir,
            config_bytes=config_path.read_bytes(),
            cache_dir=options.cache_dir,
            pull=PullOptions(options.platform, options.creds, options.insecure_http),
            progress=quiet,
        )
        return rootfs.build(
            options.output_dir or config_dir / "build",
            manifest_template=options.manifest,
            name=options.name,
            version=options.version,
        )
    builder = InitramfsBuilder(
        config, config_dir, cache_dir=options.cache_dir, python=options.python, progress=quiet
    )
    return builder.build(
        options.output_dir or config_dir / "build",
        manifest_template=options.manifest,
        name=options.name,
        version=options.version,
    )
