"""VM configuration (one VM's settings, with its manifest snapshot) and partial updates."""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from ._codec import Source, json_document, read_bytes, validate_model
from ._types import HostPath, Name, Problems, SpecModel, Text, choice, fail
from .errors import quote
from .manifest import (
    CloudInit,
    Devices,
    Expose,
    Initramfs,
    Network,
    PluginManifest,
    Resources,
    RootFS,
    check_expose_list,
)

Hypervisor = Literal["qemu", "cloud-hypervisor"]
HypervisorField = Annotated[
    Hypervisor,
    choice(Hypervisor, aliases={"cloud_hypervisor": "cloud-hypervisor", "ch": "cloud-hypervisor"}),
]


def _port(value: Any) -> Any:
    """Upstream sends the port as a string; ``""``/``"0"``/``0`` mean "not set"."""
    if isinstance(value, str):
        text = value.strip()
        if not text or text == "0":
            return None
        if not text.isdigit() or len(text) > 5:
            fail(f"must be a port number 1-65535 (got {quote(value)})")
        return int(text)
    if value == 0 and not isinstance(value, bool):
        return None
    return value


Port = Annotated[int | None, BeforeValidator(_port)]


def _cmdline(value: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        fail("must be one line without control characters")
    return value.strip()


KernelCmdline = Annotated[str, AfterValidator(_cmdline)]


def _drop_upstream_expose_mode(value: Any) -> Any:
    """Upstream expose rules carry a per-rule ``mode``; the VM's network mode decides here."""
    if not isinstance(value, list):
        return value
    return [
        {k: v for k, v in item.items() if not (k == "mode" and isinstance(v, str))}
        if isinstance(item, dict)
        else item
        for item in value
    ]


ExposeList = Annotated[
    list[Expose], BeforeValidator(_drop_upstream_expose_mode), AfterValidator(check_expose_list)
]


class APIEndpoint(SpecModel):
    """Control-plane address given to the guest (upstream ``volant.api_host``/``api_port``)."""

    host: Text | None = None
    port: Port = Field(None, ge=1, le=65535)


class VMConfig(SpecModel):
    """Everything one VM is created and started from; stored and versioned by volantd.

    ``manifest`` is the plugin manifest snapshot taken at creation, so upgrading a plugin does
    not change existing VMs. Fields left out inherit from the manifest: ``runtime``,
    ``resources`` (filled in at validation), and ``network``/``expose``/``devices``/
    ``cloud_init``/boot media (see the ``effective_*`` methods).
    """

    __blank_objects__: ClassVar[frozenset[str]] = frozenset(
        {"api", "devices", "cloud_init", "network", "initramfs", "rootfs"}
    )

    plugin: Name
    runtime: Name = Field("", description="Defaults to manifest.runtime; must equal it.")
    hypervisor: HypervisorField | None = Field(None, description="null: the daemon's default.")
    kernel: Name | None = Field(None, description="Name of a registered kernel.")
    kernel_override: HostPath | None = Field(None, description="Path of a kernel on the host.")
    kernel_cmdline: KernelCmdline = Field("", description="Extra kernel arguments only.")
    resources: Resources = Field(
        default_factory=Resources, description="Defaults to manifest.resources."
    )
    api: APIEndpoint | None = None
    manifest: PluginManifest
    devices: Devices | None = None
    metadata: dict[str, JsonValue] | None = None
    expose: ExposeList | None = Field(None, description="null: manifest.network.expose.")
    cloud_init: CloudInit | None = None
    network: Network | None = None
    initramfs: Initramfs | None = None
    rootfs: RootFS | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = Problems()
        if self.plugin != self.manifest.name:
            problems.add(
                "plugin",
                f"{quote(self.plugin)} does not match the manifest's name "
                f"{quote(self.manifest.name)}",
            )
        if not self.runtime:
            self.runtime = self.manifest.runtime
        elif self.runtime != self.manifest.runtime:
            problems.add(
                "runtime",
                f"{quote(self.runtime)} does not match the manifest's runtime "
                f"{quote(self.manifest.runtime)}",
            )
        if "resources" not in self.model_fields_set:
            self.resources = self.manifest.resources.model_copy()
        if self.initramfs is not None and self.rootfs is not None:
            problems.add("rootfs", "give either initramfs or rootfs, not both")
        if self.kernel is not None and self.kernel_override is not None:
            problems.add(
                "kernel_override",
                "give either kernel (a registered kernel) or kernel_override (a path), not both",
            )
        problems.raise_if_any()
        return self

    def boot_artifact(self) -> Initramfs | RootFS | None:
        """The VM's boot medium: the config's override, else the manifest's."""
        return self.initramfs or self.rootfs or self.manifest.boot_artifact

    def effective_network(self) -> Network:
        """Network settings the VM runs with.

        The mode (and subnet settings) come from the config's ``network``, else the manifest's,
        else user mode. Exposed ports: the config's ``expose`` when not null (``[]``: none),
        else a non-empty ``network.expose`` of the config, else the manifest's.
        """
        manifest_network = self.manifest.network or Network()
        network = self.network or manifest_network
        if self.expose is not None:
            expose = list(self.expose)
        elif self.network is not None and self.network.expose:
            expose = list(self.network.expose)
        else:
            expose = list(manifest_network.expose)
        return network.model_copy(update={"expose": expose})

    def effective_devices(self) -> Devices | None:
        """PCI devices: the config's when given, else the manifest's."""
        return self.devices if self.devices is not None else self.manifest.devices

    def effective_cloud_init(self) -> CloudInit | None:
        """Cloud-init: each document of the config replaces the manifest's one."""
        base, override = self.manifest.cloud_init, self.cloud_init
        if override is None or base is None:
            return override or base
        update: dict[str, Any] = {
            name: getattr(override, name)
            for name in ("datasource", "seed_mode")
            if name in override.model_fields_set
        }
        for name in ("user_data", "meta_data", "network_config"):
            if getattr(override, name) is not None:
                update[name] = getattr(override, name)
        return base.model_copy(update=update)


# --- patches -------------------------------------------------------------------------------


class ResourcesPatch(SpecModel):
    """Partial resources: the given sub-fields replace the VM's."""

    __keep_nulls__: ClassVar[bool] = True

    cpu_cores: int | None = Field(None, ge=1)
    memory_mb: int | None = Field(None, ge=1)

    @field_validator("cpu_cores", "memory_mb", mode="before")
    @classmethod
    def _no_nulls(cls, value: Any) -> Any:
        if value is None:
            fail("cannot be null; leave the key out to keep the current value")
        return value


class APIPatch(SpecModel):
    """Partial API endpoint: given sub-fields replace the VM's; null clears one."""

    __keep_nulls__: ClassVar[bool] = True

    host: Text | None = None
    port: Port = Field(None, ge=1, le=65535)


class VMConfigPatch(SpecModel):
    """A partial VM config (``PATCH /api/v1/vms/<name>/config``).

    An absent field leaves the value unchanged. ``null`` clears a field: ``runtime``,
    ``resources`` and ``kernel_cmdline`` go back to their defaults (the manifest's), the others
    to "not set" (``expose: null`` inherits the manifest's exposes again, ``[]`` exposes
    nothing). ``manifest`` cannot be cleared and ``plugin`` cannot be changed.
    """

    __keep_nulls__: ClassVar[bool] = True
    __key_hints__: ClassVar[dict[str, str]] = {
        "plugin": "the plugin of a VM cannot be changed; create a new VM instead"
    }

    runtime: Name | None = None
    hypervisor: HypervisorField | None = None
    kernel: Name | None = None
    kernel_override: HostPath | None = None
    kernel_cmdline: KernelCmdline | None = None
    resources: ResourcesPatch | None = None
    api: APIPatch | None = None
    manifest: PluginManifest | None = None
    devices: Devices | None = None
    metadata: dict[str, JsonValue] | None = None
    expose: ExposeList | None = None
    cloud_init: CloudInit | None = None
    network: Network | None = None
    initramfs: Initramfs | None = None
    rootfs: RootFS | None = None

    @field_validator("manifest", mode="before")
    @classmethod
    def _manifest_not_null(cls, value: Any) -> Any:
        if value is None:
            fail("cannot be cleared; send a whole manifest to replace it")
        return value


_RESET_TO_DEFAULT = frozenset({"runtime", "resources", "kernel_cmdline"})
_MERGED = frozenset({"resources", "api"})


def apply_patch(config: VMConfig, patch: VMConfigPatch) -> VMConfig:
    """Apply ``patch`` to ``config`` and validate the result (raises SpecError)."""
    data = config.model_dump(mode="json")
    patched = patch.model_dump(mode="json")
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if value is None:
            if name in _RESET_TO_DEFAULT:
                data.pop(name, None)
            else:
                data[name] = None
        elif name in _MERGED:
            data[name] = {
                **(data.get(name) or {}),
                **value.model_dump(mode="json", exclude_unset=True),
            }
        else:
            data[name] = patched[name]
    if "manifest" in patch.model_fields_set and "runtime" not in patch.model_fields_set:
        data.pop("runtime", None)  # follows the new manifest
    return validate_model(VMConfig, data)


def parse_vm_config(data: Source, *, source: str | None = None) -> VMConfig:
    """Parse a VM config given as JSON text, bytes or a decoded mapping."""
    return validate_model(VMConfig, json_document(data, source=source), source=source)


def load_vm_config(path: str | os.PathLike[str]) -> VMConfig:
    """Read and parse a VM config JSON file."""
    name = os.fspath(path)
    return parse_vm_config(read_bytes(name), source=name)


def parse_vm_config_patch(data: Source, *, source: str | None = None) -> VMConfigPatch:
    """Parse a VM config patch given as JSON text, bytes or a decoded mapping."""
    return validate_model(VMConfigPatch, json_document(data, source=source), source=source)
