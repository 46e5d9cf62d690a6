"""``fledge.toml`` v1: how fledge builds a plugin's initramfs or OCI root filesystem."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._codec import Source, as_mapping, parse_toml_text, read_bytes, validate_model
from ._types import (
    ArtifactURL,
    Checksum,
    HostPath,
    HttpURL,
    Problems,
    RequiredText,
    SpecModel,
    Text,
    choice,
    fail,
    fail_at,
    normalise_checksum,
)
from .errors import SpecError, describe, quote
from .manifest import FsTypeField

DEFAULT_BUSYBOX_URL = "https://busybox.net/downloads/binaries/1.35.0-x86_64-linux-musl/busybox"
DEFAULT_BUSYBOX_SHA256 = normalise_checksum(
    "6e123e7f3202a8c1e9b1f94d8941580a25135382b99e8d3e34fb858bba311348"
)

Strategy = Literal["initramfs", "oci_rootfs"]
AgentSourceStrategy = Literal["bundled", "release", "local", "http"]
Compression = Literal["none", "gzip", "zstd"]
InitMode = Literal["default", "custom", "none"]

# --- [agent] -------------------------------------------------------------------------------

_AGENT_FIELDS: dict[str, tuple[str, ...]] = {
    "bundled": (),
    "release": ("version",),
    "local": ("path",),
    "http": ("url", "checksum"),
}
_AGENT_REQUIRED = {"local": "path", "http": "url"}


class AgentConfig(SpecModel):
    """Where fledge gets the guest agent (kestrel) from.

    ``bundled`` (the default) is the kestrel zipapp built from the fledge installation's own
    ``kestrel`` package; upstream's ``release`` is accepted and means the same (its
    ``version`` is informational: there is no release download).
    """

    source_strategy: Annotated[AgentSourceStrategy, choice(AgentSourceStrategy)]
    version: RequiredText | None = Field(
        None, description="release: 'latest' or a tag (informational; release means bundled)."
    )
    path: HostPath | None = Field(None, description="local: relative to the config's folder.")
    url: HttpURL | None = Field(None, description="http: where to download it.")
    checksum: Checksum | None = Field(None, description="http: expected sha256.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        strategy = self.source_strategy
        problems = Problems()
        needed = _AGENT_REQUIRED.get(strategy)
        if needed is not None and getattr(self, needed) is None:
            problems.add(needed, f"is required when using the '{strategy}' source strategy")
        for name in ("version", "path", "url", "checksum"):
            if getattr(self, name) is not None and name not in _AGENT_FIELDS[strategy]:
                users = [s for s, fields in _AGENT_FIELDS.items() if name in fields]
                problems.add(name, f"is only used with source_strategy '{users[0]}'")
        problems.raise_if_any()
        return self


DEFAULT_AGENT = AgentConfig(source_strategy="bundled")

# --- [init] --------------------------------------------------------------------------------


class InitConfig(SpecModel):
    """PID 1 of an initramfs: fledge's init + agent (default), your own ``path``, or ``none``."""

    path: Text | None = Field(None, description="Custom init; it becomes /init.")
    none: bool = Field(False, description="Your mapped /init is PID 1; no init is installed.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.none and self.path:
            fail_at("none", "cannot be true together with init.path: choose one")
        return self

    @property
    def mode(self) -> InitMode:
        """``none``, ``custom`` (a path is set) or ``default``."""
        if self.none:
            return "none"
        return "custom" if self.path else "default"


# --- [source] ------------------------------------------------------------------------------

_REF_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
)
_REF_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_REFERENCE = re.compile(
    rf"(?:(?P<domain>{_REF_DOMAIN}(?::[0-9]+)?)/)?"
    rf"(?P<path>{_REF_COMPONENT}(?:/{_REF_COMPONENT})*)"
    rf"(?::(?P<tag>{_REF_TAG}))?"
    r"(?:@(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}))?"
)
_TAG = re.compile(_REF_TAG)
_UNSUPPORTED_TRANSPORT = re.compile(
    r"(docker-daemon|containers-storage|oci-archive|oci|dir|sif|tarball):[./~]"
)


@dataclass(frozen=True)
class ImageSource:
    """Where an OCI image comes from: a registry, an OCI layout dir or a ``docker save`` file."""

    transport: Literal["registry", "oci-layout", "docker-archive"]
    reference: str
    """Registry reference (``nginx:alpine``) or the path of the layout dir / archive."""
    tag: str | None = None
    """Tag inside an OCI layout (``oci-layout:PATH:TAG``)."""

    def __str__(self) -> str:
        if self.transport == "registry":
            return self.reference
        tail = f":{self.tag}" if self.tag else ""
        return f"{self.transport}:{self.reference}{tail}"


def _image_source(text: str) -> ImageSource | str:
    """Parse an image source; a string result is the reason it is invalid."""
    value = text.strip()
    if value.startswith("docker://"):  # upstream docs' spelling; the transport is implied
        value = value[len("docker://") :]
    elif value.startswith("oci-layout:"):
        rest = value[len("oci-layout:") :]
        path, _, tag = rest.rpartition(":")
        if not path or "/" in tag or not _TAG.fullmatch(tag):
            path, tag = rest, ""
        if not path:
            return "oci-layout: needs a path (oci-layout:PATH or oci-layout:PATH:TAG)"
        return ImageSource("oci-layout", path, tag or None)
    elif value.startswith("docker-archive:"):
        path = value[len("docker-archive:") :]
        if not path:
            return "docker-archive: needs the path of a 'docker save' archive"
        return ImageSource("docker-archive", path)
    elif "://" in value or _UNSUPPORTED_TRANSPORT.match(value):
        return (
            f"unsupported image source {quote(text)}: use a registry reference "
            "(nginx:alpine, docker://nginx:alpine), oci-layout:PATH[:TAG] or docker-archive:PATH"
        )
    if not _REFERENCE.fullmatch(value):
        lower = " (repository names must be lower-case)" if value != value.lower() else ""
        return f"is not a valid image reference{lower} (got {quote(text)})"
    return ImageSource("registry", value)


def parse_image_source(text: str) -> ImageSource:
    """Parse ``source.image``: ``[docker://]REF``, ``oci-layout:PATH[:TAG]`` or
    ``docker-archive:PATH``."""
    result = _image_source(text)
    if isinstance(result, str):
        raise SpecError.single(result, "source.image")
    return result


def _image(value: str) -> str:
    result = _image_source(value)
    if isinstance(result, str):
        fail(result)
    return str(result)


class SourceConfig(SpecModel):
    """What goes into the image: an OCI image or Dockerfile, and busybox for initramfs.

    The rules across these fields depend on the strategy and are checked by FledgeConfig.
    """

    image: Annotated[str, AfterValidator(_image)] | None = Field(
        None, description="nginx:alpine, oci-layout:PATH[:TAG] or docker-archive:PATH"
    )
    dockerfile: HostPath | None = None
    context: HostPath | None = Field(None, description="Defaults to the Dockerfile's folder.")
    target: Text | None = None
    build_args: dict[RequiredText, str] = Field(default_factory=dict)
    busybox_url: ArtifactURL | None = Field(
        None,
        description="initramfs only: an http(s) URL (busybox_sha256 required) or a file path "
        "relative to the config's folder; default: the build host's static busybox.",
    )
    busybox_sha256: Checksum | None = Field(
        None, description="initramfs only: expected sha256 of the busybox binary."
    )

    @property
    def image_source(self) -> ImageSource | None:
        """``image`` parsed into transport and reference."""
        return parse_image_source(self.image) if self.image else None


# --- [filesystem] and [initramfs] ----------------------------------------------------------

_SIZE = re.compile(r"[1-9][0-9]*[KMGT]?")


def _size(value: str) -> str:
    text = value.strip().upper()
    if not _SIZE.fullmatch(text):
        fail(f"must be a size like 512M or 1G (got {quote(value)})")
    return text


def _compression_level(value: int) -> int:
    if not 0 <= value <= 22:
        fail(f"must be between 0 and 22 (got {value})")
    return value or 15


class FilesystemConfig(SpecModel):
    """The root filesystem image of an oci_rootfs build.

    Options of the other filesystem kind stay null: squashfs has ``compression_level`` and
    ``overlay_size``; ext4, xfs and btrfs have ``size_buffer_mb`` and ``preallocate``.
    """

    type: FsTypeField = "squashfs"
    compression_level: Annotated[int, AfterValidator(_compression_level)] | None = Field(
        None, description="squashfs: 1-22, default 15 (0 also means the default)."
    )
    overlay_size: Annotated[str, AfterValidator(_size)] | None = Field(
        None, description="squashfs: size of the writable tmpfs overlay, default 1G."
    )
    size_buffer_mb: int | None = Field(
        None, ge=0, description="ext4/xfs/btrfs: free space to add; default 0 = automatic."
    )
    preallocate: bool | None = Field(
        None, description="ext4/xfs/btrfs: allocate the whole file; default false."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        squashfs = self.type == "squashfs"
        unused = (
            ("size_buffer_mb", "preallocate") if squashfs else ("compression_level", "overlay_size")
        )
        users = "ext4, xfs and btrfs" if squashfs else "squashfs"
        problems = Problems()
        for name in unused:
            if getattr(self, name) is not None:
                problems.add(name, f"is only used by type {users}, not {self.type}")
        problems.raise_if_any()
        if squashfs:
            self.compression_level = self.compression_level or 15
            self.overlay_size = self.overlay_size or "1G"
        else:
            self.size_buffer_mb = self.size_buffer_mb or 0
            self.preallocate = bool(self.preallocate)
        return self


class InitramfsOptions(SpecModel):
    """Output options of an initramfs build."""

    compression: Annotated[Compression, choice(Compression, aliases={"zstandard": "zstd"})] = "zstd"


# --- the config ----------------------------------------------------------------------------


def _version(value: Any) -> Any:
    if not isinstance(value, str):
        fail(f'must be the string "1" (write version = "1"), got {describe(value)}')
    if value.strip() != "1":
        fail(f"unsupported config version {quote(value)}, expected '1'")
    return "1"


def _check_mapping(source: str, dest: str) -> list[tuple[tuple[str, ...], str]]:
    issues: list[tuple[tuple[str, ...], str]] = []
    if not source.strip():
        issues.append(((source,), "mapping source path cannot be empty"))
    if not dest.strip():
        issues.append(((source,), "destination path cannot be empty"))
    elif not dest.startswith("/"):
        issues.append(
            ((source,), f"destination {quote(dest)} must be an absolute path (start with /)")
        )
    elif ".." in dest.split("/"):
        issues.append(((source,), f"destination {quote(dest)} contains a '..' path component"))
    elif "\x00" in dest or "\x00" in source:
        issues.append(((source,), "paths must not contain NUL characters"))
    return issues


def _strategy_section(
    value: Any, info: ValidationInfo, owner: str, default: Callable[[], Any]
) -> Any:
    """A section that belongs to one strategy: defaulted there, an error with the other."""
    strategy = info.data.get("strategy")
    if strategy == owner:
        return value or default()
    if strategy in get_args(Strategy) and value is not None:
        fail(f"is only used with strategy '{owner}'")
    return value


class FledgeConfig(SpecModel):
    """A ``fledge.toml`` (version 1). Defaults are filled in, so the model is what fledge builds.

    Rules beyond upstream's: unknown keys are errors; sections that the strategy does not use
    are errors; ``[agent]`` defaults to ``bundled`` (for oci_rootfs too); without
    ``busybox_url`` the build host's static busybox is used; an http(s) ``busybox_url`` needs
    ``busybox_sha256`` (the default URL gets the default checksum); ``init.none`` needs a
    mapping to /init.
    """

    version: Annotated[str, BeforeValidator(_version)] = Field(description='Always "1".')
    strategy: Annotated[Strategy, choice(Strategy)]
    init: InitConfig | None = Field(None, validate_default=True)
    agent: AgentConfig | None = Field(None, validate_default=True)
    source: SourceConfig = Field(default_factory=SourceConfig, validate_default=True)
    filesystem: FilesystemConfig | None = Field(None, validate_default=True)
    initramfs: InitramfsOptions | None = Field(None, validate_default=True)
    mappings: dict[str, str] = Field(
        default_factory=dict,
        validate_default=True,
        description="Host source (relative to this file) -> absolute path in the image.",
    )

    @field_validator("init")
    @classmethod
    def _init_for_initramfs(cls, value: InitConfig | None, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("strategy") == "oci_rootfs":
            fail("is only used with strategy 'initramfs'")
        return value

    @field_validator("agent")
    @classmethod
    def _agent_for_init_mode(cls, value: AgentConfig | None, info: ValidationInfo) -> Any:
        strategy = info.data.get("strategy")
        if strategy == "oci_rootfs":
            return value or DEFAULT_AGENT
        if strategy != "initramfs" or "init" not in info.data:
            return value
        init: InitConfig | None = info.data["init"]
        mode = init.mode if init else "default"
        if mode == "default":
            return value or DEFAULT_AGENT
        if value is not None:
            which = (
                "custom init mode ([init] path set)"
                if mode == "custom"
                else ("no-init mode ([init] none = true)")
            )
            fail(f"section cannot be specified with {which}; remove [agent] or change [init]")
        return None

    @field_validator("source")
    @classmethod
    def _source_for_strategy(cls, value: SourceConfig, info: ValidationInfo) -> Any:
        strategy = info.data.get("strategy")
        problems = Problems()
        if value.image and value.dockerfile:
            problems.add("dockerfile", "only one of source.image or source.dockerfile may be given")
        if not value.dockerfile:
            for name in ("context", "target", "build_args"):
                if getattr(value, name):
                    problems.add(name, "is only used with source.dockerfile")
        if strategy == "oci_rootfs":
            if not value.image and not value.dockerfile:
                problems.add(
                    (),
                    "either 'source.image' or 'source.dockerfile' is required for oci_rootfs "
                    "strategy",
                )
            for name in ("busybox_url", "busybox_sha256"):
                if getattr(value, name) is not None:
                    problems.add(name, "is only used with strategy 'initramfs'")
        if (
            strategy == "initramfs"
            and value.busybox_url is not None
            and value.busybox_url != DEFAULT_BUSYBOX_URL
            and value.busybox_url.lower().startswith(("http://", "https://"))
            and value.busybox_sha256 is None
        ):
            problems.add(
                "busybox_sha256",
                "is required with an http(s) busybox_url: fledge verifies every download "
                "(write busybox_sha256 = '<64 hex digits>')",
            )
        problems.raise_if_any()
        if strategy == "initramfs" and value.busybox_url == DEFAULT_BUSYBOX_URL:
            return value.model_copy(
                update={"busybox_sha256": value.busybox_sha256 or DEFAULT_BUSYBOX_SHA256}
            )
        return value

    @field_validator("filesystem")
    @classmethod
    def _filesystem_for_oci(cls, value: FilesystemConfig | None, info: ValidationInfo) -> Any:
        return _strategy_section(value, info, "oci_rootfs", FilesystemConfig)

    @field_validator("initramfs")
    @classmethod
    def _initramfs_options(cls, value: InitramfsOptions | None, info: ValidationInfo) -> Any:
        return _strategy_section(value, info, "initramfs", InitramfsOptions)

    @field_validator("mappings")
    @classmethod
    def _check_mappings(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        problems = Problems()
        for source, dest in value.items():
            for loc, message in _check_mapping(source, dest):
                problems.add(loc, message)
        init: InitConfig | None = info.data.get("init")
        if (
            info.data.get("strategy") == "initramfs"
            and init is not None
            and init.mode == "none"
            and not any(posixpath.normpath(d) == "/init" for d in value.values() if d)
        ):
            problems.add(
                (), "[init] none = true needs a mapping to /init (the program run as PID 1)"
            )
        problems.raise_if_any()
        return value

    @property
    def init_mode(self) -> InitMode | None:
        """The initramfs init mode; None for oci_rootfs."""
        if self.strategy != "initramfs":
            return None
        return self.init.mode if self.init else "default"


def parse_fledge_config(data: Source, *, source: str | None = None) -> FledgeConfig:
    """Parse ``fledge.toml`` text (or an already-decoded mapping); defaults are applied."""
    document = (
        parse_toml_text(data, source=source)
        if isinstance(data, (str, bytes))
        else as_mapping(data, source=source, what="table")
    )
    return validate_model(FledgeConfig, document, source=source, table_word="table")


def load_fledge_config(path: str | os.PathLike[str]) -> FledgeConfig:
    """Read and parse a ``fledge.toml`` file."""
    name = os.fspath(path)
    return parse_fledge_config(read_bytes(name), source=name)
