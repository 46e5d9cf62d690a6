"""The guest boot contract: ``/etc/volant/vm.json``, contract version 1.

volantd writes it into a per-VM cpio; the C init reads ``modules``, the guest agent (kestrel)
reads the rest as plain JSON (no pydantic in the guest). Every key is always present (``null``
when unset) so the agent can index it directly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from ._codec import Source, json_document, read_bytes, validate_model
from ._types import GuestPath, HttpURL, Problems, SpecModel, Text, choice, fail
from .errors import describe, quote
from .manifest import (
    Environment,
    FsTypeField,
    HealthCheck,
    IPv4,
    MountPoint,
    NetworkModeField,
    PluginManifest,
    RestartPolicy,
    StopSignal,
    WorkloadType,
)

CONTRACT_VERSION = 1
VM_CONTRACT_PATH = "/etc/volant/vm.json"
"""Where the contract lives inside the guest."""
DEFAULT_AGENT_TCP_PORT = 8080

_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def _hostname(value: str) -> str:
    if len(value) > 253 or not all(_HOSTNAME_LABEL.fullmatch(p) for p in value.split(".")):
        fail(f"must be a hostname: dot-separated labels of a-z, 0-9 and '-' (got {quote(value)})")
    return value


def _mac(value: str) -> str:
    if not _MAC.fullmatch(value):
        fail(f"must be a MAC address like 02:00:00:00:00:01 (got {quote(value)})")
    return value.lower()


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        fail(f"must be an IP address (got {quote(value)})")


def _vm_name(value: str) -> str:
    if not value or len(value) > 255 or "/" in value or "\x00" in value:
        fail(f"must be 1-255 characters without '/' (got {quote(value)})")
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]
MacAddress = Annotated[str, AfterValidator(_mac)]
IPAddress = Annotated[str, AfterValidator(_ip)]


class VMIdentity(SpecModel):
    """Which VM this is."""

    name: Annotated[str, AfterValidator(_vm_name)]
    id: Annotated[str, AfterValidator(_vm_name)] = Field(description="volantd's id of the VM.")


class GuestWorkload(SpecModel):
    """The program kestrel runs: ``entrypoint`` + ``args``, with env, workdir and user.

    An empty ``entrypoint`` means the root image's own entrypoint (from its OCI config).
    """

    type: Annotated[WorkloadType, choice(WorkloadType)]
    entrypoint: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: Environment = Field(default_factory=dict)
    workdir: GuestPath = "/"
    user: Text | None = Field(None, description="user, uid, user:group or uid:gid; null: root.")
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    base_url: HttpURL | None = Field(None, description="http workloads: where it listens.")
    health_check: HealthCheck | None = None
    stop_signal: StopSignal | None = Field(
        None, description="Sent to stop the workload (then SIGKILL); null: SIGTERM."
    )

    @classmethod
    def from_manifest(cls, manifest: PluginManifest) -> GuestWorkload | None:
        """The manifest's workload and health check in contract form (None: no workload)."""
        workload = manifest.workload
        if workload is None:
            return None
        return cls(
            type=workload.type,
            entrypoint=list(workload.entrypoint),
            args=list(workload.args),
            env=dict(workload.env),
            workdir=workload.workdir or "/",
            user=workload.user,
            restart=workload.restart.model_copy(),
            base_url=workload.base_url,
            health_check=manifest.health_check,
            stop_signal=workload.stop_signal,
        )


class GuestNetwork(SpecModel):
    """The guest's network interface.

    ``address``/``prefix`` null: the guest asks by DHCP (``dhcp`` mode, QEMU user-mode NAT).
    ``mac`` null: no network interface (``isolated`` over vsock only).
    """

    mode: NetworkModeField
    interface: Text = "eth0"
    mac: MacAddress | None
    address: IPv4 | None = None
    prefix: int | None = Field(None, ge=0, le=32)
    gateway: IPv4 | None = None
    dns: list[IPAddress] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems()
        if (self.address is None) != (self.prefix is None):
            problems.add(
                "prefix" if self.prefix is None else "address", "address and prefix go together"
            )
        if self.gateway is not None and self.address is None:
            problems.add("gateway", "needs a static address")
        if self.mode == "dhcp" and self.address is not None:
            problems.add("address", "must be null in dhcp mode (the guest asks by DHCP)")
        if self.mode == "bridged" and self.address is None:
            problems.add("address", "is required in bridged mode (from volantd's IPAM)")
        if self.mac is None and self.mode != "isolated":
            problems.add("mac", f"is required in {self.mode} mode")
        problems.raise_if_any()
        return self


class AgentListen(SpecModel):
    """Where kestrel serves its API."""

    tcp_port: int = Field(DEFAULT_AGENT_TCP_PORT, ge=1, le=65535)
    vsock_port: int | None = Field(None, ge=1, le=0xFFFFFFFE, description="null: no vsock.")


class GuestBoot(SpecModel):
    """Boot strategy: stay in the initramfs, or mount ``root_device`` and switch root."""

    strategy: Annotated[Literal["initramfs", "rootfs"], choice(Literal["initramfs", "rootfs"])]
    root_device: GuestPath | None = Field(None, description="rootfs: e.g. /dev/vda.")
    root_fstype: FsTypeField | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems()
        for name in ("root_device", "root_fstype"):
            given = getattr(self, name) is not None
            if self.strategy == "rootfs" and not given:
                problems.add(name, "is required for the rootfs strategy")
            if self.strategy == "initramfs" and given:
                problems.add(name, "must be null for the initramfs strategy")
        problems.raise_if_any()
        return self


GuestFsType = Literal["ext4", "squashfs", "xfs", "btrfs", "vfat", "iso9660"]
"""Filesystems of guest disks: a manifest's (FsType) and a cloud-init seed's (vfat, iso9660)."""


class GuestDisk(SpecModel):
    """A disk as the guest sees it: the device it appears as, and where to mount it.

    volantd attaches the manifest's disks after the root disk in manifest order, then the
    cloud-init seed (``cloud-init``, never mounted by the agent: cloud-init in the image finds
    it by its label); ``device`` is the name the guest kernel gives it (``/dev/vdb``, ...).
    ``mount`` null: the agent leaves it alone.
    """

    name: Text
    device: GuestPath
    fstype: Annotated[GuestFsType, choice(GuestFsType)] | None = None
    mount: MountPoint | None = None
    readonly: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.mount is not None and self.fstype is None:
            fail("fstype is required to mount the disk")
        return self


def _contract_version(value: Any) -> Any:
    if value != CONTRACT_VERSION or isinstance(value, bool):
        fail(f"unsupported contract version {describe(value)}: this reader understands 1")
    return value


def _modules(value: list[str]) -> list[str]:
    seen: set[str] = set()
    for path in value:
        if path in seen:
            fail(f"lists {quote(path)} twice")
        seen.add(path)
    return value


class VMContract(SpecModel):
    """``/etc/volant/vm.json``: everything the guest needs to boot and run its workload."""

    contract: Annotated[Literal[1], BeforeValidator(_contract_version)] = Field(
        1, description="Contract version."
    )
    vm: VMIdentity
    hostname: Hostname
    manifest: PluginManifest
    workload: GuestWorkload | None
    network: GuestNetwork
    agent: AgentListen = Field(default_factory=AgentListen)
    boot: GuestBoot
    disks: list[GuestDisk] = Field(
        default_factory=list, description="Disks after the root disk, in attach order."
    )
    modules: Annotated[list[GuestPath], AfterValidator(_modules)] = Field(
        default_factory=list, description="Kernel modules to load, in order (paths in the guest)."
    )
    console_shell: bool = Field(False, description="Offer a root shell on the serial console.")
    boot_epoch_ns: int = Field(ge=0, description="Host wall clock (ns) when the VMM was spawned.")

    def to_json(self) -> str:
        """The JSON text volantd writes to the guest (stable key order, trailing newline)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def parse_vm_contract(data: Source, *, source: str | None = None) -> VMContract:
    """Parse a ``vm.json`` document given as JSON text, bytes or a decoded mapping."""
    return validate_model(VMContract, json_document(data, source=source), source=source)


def load_vm_contract(path: str | os.PathLike[str]) -> VMContract:
    """Read and parse a ``vm.json`` file."""
    name = os.fspath(path)
    return parse_vm_contract(read_bytes(name), source=name)
