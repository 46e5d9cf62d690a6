"""Plugin manifest v1: what a plugin is, how it boots and what it runs."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._codec import Source, json_document, read_bytes, validate_model
from ._types import (
    ArtifactURL,
    Checksum,
    GuestPath,
    HostPath,
    HttpURL,
    Key,
    Name,
    Problems,
    RequiredText,
    SpecModel,
    Text,
    choice,
    fail,
    fail_at,
    is_url,
)
from .errors import SpecError, quote

FsType = Literal["ext4", "squashfs", "xfs", "btrfs"]
"""Filesystem inside a root or data disk."""
DiskFormat = Literal["raw", "qcow2"]
"""Container format of a disk image (how the VMM reads the file)."""
InitramfsFormat = Literal["cpio", "cpio.gz", "cpio.zst"]
NetworkMode = Literal["user", "isolated", "bridged", "dhcp"]
WorkloadType = Literal["http", "process"]
RestartPolicyName = Literal["never", "on-failure", "always"]
Protocol = Literal["tcp", "udp"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
SeedMode = Literal["vfat", "iso9660"]

FS_TYPES: tuple[str, ...] = typing.get_args(FsType)
NETWORK_MODE_ALIASES: Mapping[str, str] = {"vsock": "isolated", "bridge": "bridged"}
"""Upstream network mode names and what they mean here."""

FsTypeField = Annotated[FsType, choice(FsType)]
DiskFormatField = Annotated[DiskFormat, choice(DiskFormat)]
NetworkModeField = Annotated[NetworkMode, choice(NetworkMode, aliases=NETWORK_MODE_ALIASES)]
ProtocolField = Annotated[Protocol, choice(Protocol)]

# --- resources -----------------------------------------------------------------------------


class Resources(SpecModel):
    """vCPUs and memory a VM of this plugin gets unless its VM config says otherwise."""

    cpu_cores: int = Field(1, ge=1, description="Number of vCPUs.")
    memory_mb: int = Field(256, ge=1, description="Guest memory in MiB.")


# --- workload ------------------------------------------------------------------------------


class RestartPolicy(SpecModel):
    """What the guest agent does when the workload exits.

    Delays grow from ``backoff_initial_ms`` by ``backoff_multiplier`` up to ``backoff_max_ms``.
    A string (``"on-failure"``) is shorthand for ``{"policy": "on-failure"}``.
    """

    policy: Annotated[
        RestartPolicyName,
        choice(RestartPolicyName, aliases={"no": "never", "on_failure": "on-failure"}),
    ] = "never"
    max_restarts: int | None = Field(
        None, ge=0, description="Give up after this many restarts; null: no limit."
    )
    backoff_initial_ms: int = Field(1000, ge=0)
    backoff_max_ms: int = Field(30_000, ge=0)
    backoff_multiplier: float = Field(2.0, ge=1.0, le=100.0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"policy": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.backoff_max_ms < self.backoff_initial_ms:
            fail_at(
                "backoff_max_ms",
                f"must be >= backoff_initial_ms ({self.backoff_initial_ms}), "
                f"got {self.backoff_max_ms}",
            )
        return self


def _env_name(value: str) -> str:
    if not value or "=" in value or "\x00" in value:
        fail(f"must be non-empty and without '=' or NUL (got {quote(value)})")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        fail("must not contain NUL characters")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
EnvValue = Annotated[str, AfterValidator(_no_nul)]
Environment = dict[EnvName, EnvValue]
Argv = list[Annotated[str, AfterValidator(_no_nul)]]

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")


def _user(value: str) -> str:
    if not _USER.fullmatch(value):
        fail(f"must be 'user', 'uid', 'user:group' or 'uid:gid' (got {quote(value)})")
    return value


_SIGNAL_NAMES = frozenset(
    {
        "HUP",
        "INT",
        "QUIT",
        "ILL",
        "TRAP",
        "ABRT",
        "IOT",
        "BUS",
        "FPE",
        "KILL",
        "USR1",
        "SEGV",
        "USR2",
        "PIPE",
        "ALRM",
        "TERM",
        "STKFLT",
        "CHLD",
        "CONT",
        "STOP",
        "TSTP",
        "TTIN",
        "TTOU",
        "URG",
        "XCPU",
        "XFSZ",
        "VTALRM",
        "PROF",
        "WINCH",
        "IO",
        "POLL",
        "PWR",
        "SYS",
    }
)
_REALTIME_SIGNAL = re.compile(r"RTMIN(\+([0-9]|[12][0-9]|30))?|RTMAX(-([0-9]|[12][0-9]|30))?")
MAX_SIGNAL = 64
"""Highest Linux signal number (SIGRTMAX)."""


def _stop_signal(value: Any) -> Any:
    """``SIGQUIT``, ``quit``, ``SIGRTMIN+3`` or a number (1-64), as Docker's StopSignal."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return value  # the str type reports it
    text = value.strip()
    if text.isdigit():
        if not 1 <= int(text) <= MAX_SIGNAL:
            fail(f"signal number must be between 1 and {MAX_SIGNAL} (got {text})")
        return str(int(text))
    name = text.upper().removeprefix("SIG")
    if name not in _SIGNAL_NAMES and not _REALTIME_SIGNAL.fullmatch(name):
        fail(
            f"must be a signal name like SIGTERM or SIGQUIT, or a number 1-{MAX_SIGNAL} "
            f"(got {quote(value)})"
        )
    return f"SIG{name}"


StopSignal = Annotated[str, BeforeValidator(_stop_signal)]
"""A signal as ``SIGNAME`` (``SIGTERM``, ``SIGRTMIN+3``) or a decimal number."""


def _entrypoint(value: Any) -> Any:
    if isinstance(value, str):  # upstream fledge layout: one program path, args separate
        return [value.strip()] if value.strip() else []
    return value


class Workload(SpecModel):
    """The program the guest agent runs and supervises.

    ``type`` is ``http`` (a service kestrel proxies and health-checks at ``base_url``) or
    ``process`` (any other program); when absent it is ``http`` if ``base_url`` is set.
    An empty ``entrypoint`` means the image's own entrypoint (rootfs images keep their OCI
    config); ``args`` are appended to the entrypoint. ``stop_signal`` is what the agent sends
    to stop the workload before it kills it (null: SIGTERM; an OCI image's StopSignal).
    """

    type: Annotated[WorkloadType, choice(WorkloadType)] = "process"
    entrypoint: Annotated[Argv, BeforeValidator(_entrypoint)] = Field(default_factory=list)
    args: Argv = Field(default_factory=list)
    env: Environment = Field(default_factory=dict)
    workdir: GuestPath | None = None
    user: Annotated[Text, AfterValidator(_user)] | None = None
    base_url: HttpURL | None = None
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    stop_signal: StopSignal | None = Field(
        None, description="SIGTERM, SIGQUIT, ... or a number; null: SIGTERM."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if "type" not in self.model_fields_set:
            self.type = "http" if self.base_url else "process"
        problems = Problems()
        if self.entrypoint and not self.entrypoint[0].strip():
            problems.add(("entrypoint", 0), "the program path must not be empty")
        if self.type == "http" and not self.base_url:
            problems.add("base_url", "is required for an http workload")
        if self.type == "process" and self.base_url:
            problems.add("base_url", "is only used by http workloads (set type = 'http')")
        problems.raise_if_any()
        return self

    @property
    def argv(self) -> list[str]:
        """Entrypoint followed by args."""
        return [*self.entrypoint, *self.args]


class HealthCheck(SpecModel):
    """How the guest agent decides that an http workload is ready."""

    endpoint: RequiredText = Field(description="Path (or URL) resolved against base_url.")
    timeout_ms: int = Field(
        60_000, ge=0, description="Give up after this long; 0 means the default (60 s)."
    )
    interval_ms: int = Field(50, ge=1, description="Delay between probes.")

    @field_validator("timeout_ms")
    @classmethod
    def _zero_is_default(cls, value: int) -> int:
        return value or 60_000


# --- boot media and disks ------------------------------------------------------------------


def _split_format(data: Any) -> Any:
    """Accept a filesystem name given as ``format`` (upstream docs: ``"format": "ext4"``)."""
    if not isinstance(data, dict):
        return data
    fmt = data.get("format")
    if not isinstance(fmt, str) or fmt.strip().lower() not in FS_TYPES:
        return data
    fs = fmt.strip().lower()
    given = data.get("fstype")
    if isinstance(given, str) and given.strip() and given.strip().lower() != fs:
        fail_at(
            "format",
            f"names filesystem {quote(fs)} but fstype is {quote(given)}: put the filesystem in "
            "fstype and the disk format (raw or qcow2) in format",
        )
    return {**data, "format": "raw", "fstype": fs}


class Initramfs(SpecModel):
    """A cpio archive the kernel unpacks as its root filesystem."""

    url: ArtifactURL
    checksum: Checksum | None = None
    format: (
        Annotated[
            InitramfsFormat,
            choice(InitramfsFormat, aliases={"cpio.gzip": "cpio.gz", "cpio.zstd": "cpio.zst"}),
        ]
        | None
    ) = Field(None, description="Compression; null: detected from the file.")


class RootFS(SpecModel):
    """A disk image the guest agent mounts as root (``format``: file format; ``fstype``)."""

    url: ArtifactURL
    checksum: Checksum | None = None
    format: DiskFormatField = "raw"
    fstype: FsTypeField = "ext4"

    @model_validator(mode="before")
    @classmethod
    def _filesystem_as_format(cls, data: Any) -> Any:
        return _split_format(data)


_DISK_SIZE = re.compile(r"([1-9][0-9]*)([KMGT]?)")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_DISK_SIZE = 1 << 20
"""Smallest new empty disk (1 MiB): room for an ext4 filesystem."""
MAX_DISK_SIZE = 16 << 40
NEW_DISK_FILESYSTEMS = ("ext4",)
"""What volantd can format a new empty disk with (``mkfs.ext4``, no root needed)."""
RESERVED_MOUNTS = ("/", "/dev", "/proc", "/sys", "/run", "/etc", "/etc/volant")


def size_bytes(text: str) -> int:
    """A disk size like ``512M`` or ``1G`` (binary units; no unit: bytes) in bytes."""
    match = _DISK_SIZE.fullmatch(text.strip().upper().removesuffix("IB").removesuffix("B"))
    if not match:
        raise ValueError(f"not a size like 512M or 1G: {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _disk_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return value  # the str type reports it
    try:
        size = size_bytes(value)
    except ValueError:
        fail(f"must be a size like 512M, 1G or 2T (binary units; got {quote(value)})")
    if not MIN_DISK_SIZE <= size <= MAX_DISK_SIZE:
        fail(f"must be between 1M and 16T (got {quote(value)})")
    return value.strip().upper()


def _mount_point(value: str) -> str:
    path = os.path.normpath(value)
    if path in RESERVED_MOUNTS:
        fail(f"{quote(value)} is where the guest keeps its own files; mount the disk elsewhere")
    return path


DiskSize = Annotated[str, BeforeValidator(_disk_size)]
"""A disk size: digits and an optional K, M, G or T (binary units), e.g. ``512M``."""
MountPoint = Annotated[GuestPath, AfterValidator(_mount_point)]


class Disk(SpecModel):
    """An extra disk attached after the root disk, in list order (``/dev/vdb``, ...).

    The disk's content comes from ``source`` (an image, cached and checked like the other
    artifacts; every VM writes to its own copy-on-write overlay unless ``readonly``) or, with
    no ``source``, is a new empty disk of ``size`` that volantd formats with ``fstype`` (ext4)
    for each VM. The guest agent mounts a disk with a ``mount`` path there before the
    workload starts (read-only for ``readonly`` disks and squashfs).
    """

    name: Key
    source: ArtifactURL | None = Field(None, description="Image URL or path; null: new disk.")
    checksum: Checksum | None = None
    format: DiskFormatField = "raw"
    fstype: FsTypeField | None = Field(
        None, description="Filesystem on the disk; needed to mount it or format a new disk."
    )
    readonly: bool = False
    size: DiskSize | None = Field(
        None, description="New empty disk (no source): its size, e.g. 1G."
    )
    mount: MountPoint | None = Field(
        None, description="Where the guest mounts the disk; null: not mounted."
    )
    target: Text | None = Field(None, description="Informational, as upstream.")

    @model_validator(mode="before")
    @classmethod
    def _filesystem_as_format(cls, data: Any) -> Any:
        return _split_format(data)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems()
        if self.source is None:
            if self.size is None:
                problems.add("source", "give an image (source) or the size of a new empty disk")
            if self.checksum is not None:
                problems.add("checksum", "needs a source image to check")
            if self.fstype is None:
                problems.add("fstype", "is required for a new empty disk (the filesystem to make)")
            elif self.fstype not in NEW_DISK_FILESYSTEMS:
                problems.add(
                    "fstype",
                    f"new empty disks are formatted as ext4; {self.fstype} needs a source image",
                )
            if self.format != "raw":
                problems.add("format", "a new empty disk is a sparse raw file: leave format raw")
            if self.readonly:
                problems.add("readonly", "a new empty disk that cannot be written is of no use")
        elif self.size is not None:
            problems.add("size", "is for new empty disks; a disk with a source has its size")
        if self.mount is not None and self.fstype is None:
            problems.add("fstype", "is required to mount the disk (mount is set)")
        problems.raise_if_any()
        return self

    @property
    def read_only(self) -> bool:
        """Whether the guest sees the disk read-only: ``readonly``, or a squashfs."""
        return self.readonly or self.fstype == "squashfs"


# --- cloud-init ----------------------------------------------------------------------------


class CloudInitDocument(SpecModel):
    """One cloud-init document, given inline (``content``) or as a file (``path``)."""

    inline: bool = False
    content: str | None = None
    path: HostPath | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems()
        if self.content is not None and self.path is not None:
            problems.add("content", "give either content or path, not both")
        elif self.content is None and self.path is None:
            problems.add("content", "give the document's content or a path to it")
        elif "inline" in self.model_fields_set and self.inline != (self.content is not None):
            if self.inline:
                problems.add("inline", "is true but the document has a path, not content")
            else:
                problems.add("inline", "is false but the document has content, not a path")
        problems.raise_if_any()
        self.inline = self.content is not None
        return self


_DOC_KEYS = frozenset({"inline", "content", "path"})


def _free_table(value: Any) -> Any:
    """Upstream fledge wrote meta-data as a plain table; keep it as (JSON, hence YAML) text."""
    if isinstance(value, dict) and value and not _DOC_KEYS.intersection(value):
        return {"content": json.dumps(value, sort_keys=True, default=str) + "\n"}
    return value


class CloudInit(SpecModel):
    """NoCloud seed contents for images that run cloud-init."""

    __blank_objects__: ClassVar[frozenset[str]] = frozenset(
        {"user_data", "meta_data", "network_config"}
    )

    datasource: RequiredText = "NoCloud"
    seed_mode: Annotated[SeedMode, choice(SeedMode, aliases={"iso": "iso9660"})] = "vfat"
    user_data: CloudInitDocument | None = None
    meta_data: Annotated[CloudInitDocument | None, BeforeValidator(_free_table)] = None
    network_config: CloudInitDocument | None = None


# --- devices -------------------------------------------------------------------------------

_PCI = re.compile(r"(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])")
_PCI_ID = re.compile(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{4}|\*)")


def _pci_address(value: str) -> str:
    match = _PCI.fullmatch(value.strip())
    if not match:
        fail(f"must be a PCI address like 0000:01:00.0 (got {quote(value)})")
    domain, bus, slot, func = match.groups()
    return f"{domain or '0000'}:{bus}:{slot}.{func}".lower()


def _pci_id(value: str) -> str:
    if not _PCI_ID.fullmatch(value.strip()):
        fail(f"must be 'vendor:device' or 'vendor:*' in hex, like 10de:1db6 (got {quote(value)})")
    return value.strip().lower()


class Devices(SpecModel):
    """Host PCI devices passed through to the guest (VFIO)."""

    pci_passthrough: list[Annotated[str, AfterValidator(_pci_address)]] = Field(
        default_factory=list
    )
    allowlist: list[Annotated[str, AfterValidator(_pci_id)]] = Field(default_factory=list)


# --- network -------------------------------------------------------------------------------


def _zero_is_none(value: Any) -> Any:
    return None if value == 0 and not isinstance(value, bool) else value


class Expose(SpecModel):
    """A guest port published on the host (``host_port`` null: the host picks one)."""

    name: Key | None = None
    port: int = Field(ge=1, le=65535, description="Port inside the guest.")
    host_port: Annotated[int | None, BeforeValidator(_zero_is_none)] = Field(None, ge=1, le=65535)
    protocol: ProtocolField = "tcp"


def check_expose_list(items: list[Expose]) -> list[Expose]:
    """Reject two entries with the same name or the same host port and protocol."""
    problems = Problems()
    names: dict[str, int] = {}
    ports: dict[tuple[str, int], int] = {}
    for i, item in enumerate(items):
        if item.name is not None:
            if item.name in names:
                problems.add(
                    (i, "name"), f"duplicate name {quote(item.name)} (also [{names[item.name]}])"
                )
            names.setdefault(item.name, i)
        if item.host_port is not None:
            key = (item.protocol, item.host_port)
            if key in ports:
                problems.add(
                    (i, "host_port"),
                    f"{item.protocol} host port {item.host_port} is already used by [{ports[key]}]",
                )
            ports.setdefault(key, i)
    problems.raise_if_any()
    return items


def _ipv4_network(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value.strip()))
    except ValueError as exc:
        fail(f"must be an IPv4 network like 192.168.127.0/24 ({exc})")


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError as exc:
        fail(f"must be an IPv4 address ({exc})")


IPv4 = Annotated[str, AfterValidator(_ipv4)]


class Network(SpecModel):
    """How the guest is connected.

    Modes: ``user`` (default; QEMU user-mode NAT, no root needed), ``isolated`` (no egress;
    upstream ``vsock``), ``bridged`` (tap on a bridge, static address from IPAM) and ``dhcp``
    (bridged, the guest asks by DHCP). ``subnet``/``gateway``/``auto_assign`` are upstream
    fields, kept for compatibility.
    """

    mode: NetworkModeField = "user"
    subnet: Annotated[str, AfterValidator(_ipv4_network)] | None = None
    gateway: IPv4 | None = None
    auto_assign: bool | None = None
    expose: Annotated[list[Expose], AfterValidator(check_expose_list)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems()
        if (
            self.subnet
            and self.gateway
            and ipaddress.IPv4Address(self.gateway) not in ipaddress.IPv4Network(self.subnet)
        ):
            problems.add("gateway", f"{self.gateway} is not inside subnet {self.subnet}")
        if self.mode == "bridged" and self.subnet and not (self.gateway or self.auto_assign):
            problems.add("gateway", "is required with a bridged subnet unless auto_assign is true")
        problems.raise_if_any()
        return self


# --- actions -------------------------------------------------------------------------------


def _request_path(value: str) -> str:
    value = value.strip()
    if not value.startswith("/") or any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        fail(f"must be a URL path starting with / and without spaces (got {quote(value)})")
    return value


class Action(SpecModel):
    """A named operation routed to the workload (``POST /api/v1/vms/<vm>/actions/...``)."""

    description: Text = ""
    method: Annotated[HttpMethod, choice(HttpMethod)] = "POST"
    path: Annotated[str, AfterValidator(_request_path)]
    timeout_ms: Annotated[int | None, BeforeValidator(_zero_is_none)] = Field(None, ge=1)


# --- the manifest --------------------------------------------------------------------------

_SCHEMA_VERSION = re.compile(r"v?1(\.[0-9]+){0,2}", re.IGNORECASE)


def _schema_version(value: str) -> str:
    if not _SCHEMA_VERSION.fullmatch(value):
        fail(
            f"unsupported schema_version {quote(value)}: "
            "this reads version 1 manifests ('1.0', 'v1')"
        )
    return value


class PluginManifest(SpecModel):
    """A plugin manifest (v1). Accepts upstream JSON manifests and fledge's layout unchanged.

    Normalisation, as upstream: ``runtime`` defaults to ``name``; labels always carry
    ``volant.plugin=<name>`` and ``volant.runtime=<runtime>``. A manifest boots from exactly
    one of ``initramfs`` / ``rootfs``; templates (``manifest.toml``) may have neither.
    """

    __blank_objects__: ClassVar[frozenset[str]] = frozenset(
        {"workload", "health_check", "initramfs", "rootfs", "cloud_init", "devices", "network"}
    )
    __key_hints__: ClassVar[dict[str, str]] = {
        "args": "put args under workload",
        "entrypoint": "put entrypoint under workload",
    }

    schema_: Text | None = Field(None, alias="$schema", description="Ignored.")
    schema_version: Annotated[Text, AfterValidator(_schema_version)] | None = None
    name: Name
    version: RequiredText
    runtime: Name = Field("", description="Defaults to name.")
    enabled: bool = Field(True, description="Whether VMs may be created from this plugin.")
    image: Text | None = Field(None, description="OCI image the plugin was built from.")
    image_digest: Text | None = None
    openapi: ArtifactURL | None = Field(None, description="Where the workload's OpenAPI lives.")
    resources: Resources = Field(default_factory=Resources)
    env: Environment = Field(
        default_factory=dict,
        exclude=True,
        description="Upstream fledge layout: merged into workload.env.",
    )
    workload: Workload | None = None
    health_check: HealthCheck | None = None
    initramfs: Initramfs | None = None
    rootfs: RootFS | None = Field(None, validate_default=True)
    disks: list[Disk] = Field(default_factory=list)
    cloud_init: CloudInit | None = None
    devices: Devices | None = None
    network: Network | None = None
    actions: dict[Key, Action] = Field(default_factory=dict)
    labels: dict[RequiredText, Text] = Field(default_factory=dict)

    @field_validator("rootfs")
    @classmethod
    def _one_boot_medium(cls, value: RootFS | None, info: ValidationInfo) -> RootFS | None:
        if "initramfs" not in info.data:  # initramfs itself is invalid: reported already
            return value
        initramfs = info.data["initramfs"]
        template = bool((info.context or {}).get("template"))
        problems = Problems()
        if initramfs is not None and value is not None:
            problems.add("rootfs", "give either initramfs or rootfs, not both")
        elif initramfs is None and value is None and not template:
            problems.add((), "a plugin needs a boot artifact: set initramfs.url or rootfs.url")
        problems.raise_if_any(from_parent=True)
        return value

    @field_validator("disks")
    @classmethod
    def _unique_disks(cls, value: list[Disk]) -> list[Disk]:
        problems = Problems()
        seen: dict[str, int] = {}
        mounts: dict[str, str] = {}
        for i, disk in enumerate(value):
            if disk.name in seen:
                problems.add(
                    (i, "name"),
                    f"duplicate disk name {quote(disk.name)} (also [{seen[disk.name]}])",
                )
            seen.setdefault(disk.name, i)
            if disk.mount is not None and disk.mount in mounts:
                problems.add(
                    (i, "mount"),
                    f"disk {quote(mounts[disk.mount])} is mounted at {quote(disk.mount)} already",
                )
            if disk.mount is not None:
                mounts.setdefault(disk.mount, disk.name)
        problems.raise_if_any()
        return value

    @model_validator(mode="after")
    def _normalise(self) -> Self:
        if not self.runtime:
            self.runtime = self.name
        if self.env:
            if self.workload is None:
                self.workload = Workload(env=dict(self.env))
            else:
                self.workload.env = {**self.env, **self.workload.env}
            self.env = {}
        if self.health_check is not None and (
            self.workload is None or self.workload.type != "http"
        ):
            fail_at("health_check", "needs an http workload (workload.base_url)")
        self.labels = {**self.labels, "volant.plugin": self.name, "volant.runtime": self.runtime}
        return self

    @property
    def boot_artifact(self) -> Initramfs | RootFS | None:
        """The initramfs or root disk this plugin boots from (None for a template)."""
        return self.initramfs or self.rootfs

    def to_json(self) -> str:
        """Canonical JSON text (two-space indent, trailing newline)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"

    def with_paths_resolved(self, base_dir: str | os.PathLike[str]) -> PluginManifest:
        """A copy whose relative artifact paths are made absolute against ``base_dir``.

        Affects initramfs.url, rootfs.url, disks[].source, openapi and cloud-init document
        paths; URLs and absolute paths are left alone.
        """
        base = os.path.abspath(os.fspath(base_dir))

        def resolve(location: str | None) -> str | None:
            if location is None or is_url(location) or os.path.isabs(location):
                return location
            return os.path.normpath(os.path.join(base, location))

        data = self.model_dump(mode="json")
        for key in ("initramfs", "rootfs"):
            if data.get(key):
                data[key]["url"] = resolve(data[key]["url"])
        for disk in data["disks"]:
            disk["source"] = resolve(disk["source"])
        data["openapi"] = resolve(data["openapi"])
        cloud = data.get("cloud_init") or {}
        for doc in ("user_data", "meta_data", "network_config"):
            if cloud.get(doc):
                cloud[doc]["path"] = resolve(cloud[doc]["path"])
        return validate_model(PluginManifest, data, context={"template": True})


def parse_manifest(
    data: Source, *, source: str | None = None, template: bool = False
) -> PluginManifest:
    """Parse a JSON plugin manifest given as text, bytes or a decoded mapping.

    With ``template`` the boot artifact may be missing (fledge adds it after building).
    """
    document = json_document(data, source=source)
    return validate_model(
        PluginManifest, document, source=source, context={"template": True} if template else None
    )


def load_manifest(path: str | os.PathLike[str], *, resolve_paths: bool = False) -> PluginManifest:
    """Read a manifest file: ``*.toml`` as manifest.toml, anything else as JSON.

    With ``resolve_paths``, relative artifact paths become absolute against the file's folder.
    """
    name = os.fspath(path)
    raw = read_bytes(name)
    if name.endswith(".toml"):
        from .manifest_toml import parse_manifest_toml

        manifest = parse_manifest_toml(raw, source=name)
    else:
        manifest = parse_manifest(raw, source=name)
    if resolve_paths:
        try:
            manifest = manifest.with_paths_resolved(os.path.dirname(os.path.abspath(name)))
        except SpecError as exc:
            raise exc.with_source(name) from None
    return manifest
