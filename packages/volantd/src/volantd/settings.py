"""volantd's configuration: command-line options over environment variables over defaults.

Environment variables keep upstream's names where upstream had one (``VOLANT_API_LISTEN``,
``VOLANT_API_KEY``, ``VOLANT_DB_PATH``); an empty variable counts as unset, as upstream.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from volantd.devices.errors import InvalidDeviceError
from volantd.devices.pci import AllowList
from volantd.errors import VolantError
from volantd.paths import volant_home

DEFAULT_LISTEN = "127.0.0.1:7777"
DEFAULT_BRIDGE = "vbr0"
DEFAULT_SUBNET = "192.168.127.0/24"
BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
HYPERVISORS = {"qemu": "qemu", "cloud-hypervisor": "cloud-hypervisor",
               "cloud_hypervisor": "cloud-hypervisor", "ch": "cloud-hypervisor"}  # fmt: skip
"""`VOLANT_HYPERVISOR` values (the aliases of VM configs' ``hypervisor``) -> driver names."""


class SettingsError(VolantError):
    """A setting has a value volantd cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything ``volantd serve`` needs to know."""

    home: Path = field(default_factory=volant_home)
    listen: str = DEFAULT_LISTEN
    """``HOST:PORT`` to listen on (ignored when ``unix_socket`` is set)."""
    unix_socket: Path | None = None
    db_path: Path | None = None
    """The SQLite file; default ``<home>/volant.db``."""
    api_key: str | None = None
    allow_remote_without_key: bool = False
    log_level: str = "info"
    stop_vms_on_exit: bool = False
    kernels_dir: Path | None = None
    """Where registered kernels live; default ``<home>/kernels``."""
    bridge: str = DEFAULT_BRIDGE
    """The host bridge of ``bridged`` and ``dhcp`` VMs (``volar setup --bridge`` makes it)."""
    subnet: str = DEFAULT_SUBNET
    """The bridge's IPv4 subnet: VMs lease their addresses from it."""
    host_ip: str | None = None
    """The bridge's own address, the guests' gateway; default the subnet's first address."""
    dns: tuple[str, ...] | None = None
    """Name servers for bridged guests; default the host's own (non-loopback) resolvers."""
    hypervisor: str = "qemu"
    """The driver of VMs whose config names none: ``qemu`` or ``cloud-hypervisor``."""
    sysfs_root: Path = Path("/sys")
    """Where sysfs is (PCI devices for VFIO); tests point it at a tree of their own."""
    vfio_allowlist: tuple[str, ...] = ()
    """The ``vendor:device`` (or ``vendor:*``) ids of the host PCI devices volantd may bind
    to vfio-pci and pass to VMs; empty: none (passthrough is off)."""

    @classmethod
    def from_environment(cls, **overrides: object) -> Settings:
        """Defaults, then ``VOLANT_*`` variables, then non-None ``overrides`` (CLI options)."""
        env = {key: value for key, value in os.environ.items() if value != ""}
        settings = cls(
            home=Path(env["VOLANT_HOME"]).expanduser() if "VOLANT_HOME" in env else volant_home(),
            listen=env.get("VOLANT_API_LISTEN", DEFAULT_LISTEN),
            unix_socket=_optional_path(env.get("VOLANT_API_SOCKET")),
            db_path=_optional_path(env.get("VOLANT_DB_PATH")),
            api_key=env.get("VOLANT_API_KEY"),
            allow_remote_without_key=_flag(env, "VOLANT_ALLOW_REMOTE_WITHOUT_KEY"),
            log_level=env.get("VOLANT_LOG_LEVEL", "info").lower(),
            stop_vms_on_exit=_flag(env, "VOLANT_STOP_VMS_ON_EXIT"),
            kernels_dir=_optional_path(env.get("VOLANT_KERNELS_DIR")),
            bridge=env.get("VOLANT_BRIDGE", DEFAULT_BRIDGE),
            subnet=env.get("VOLANT_SUBNET", DEFAULT_SUBNET),
            host_ip=env.get("VOLANT_HOST_IP"),
            dns=_address_list(env["VOLANT_DNS"]) if "VOLANT_DNS" in env else None,
            hypervisor=env.get("VOLANT_HYPERVISOR", "qemu"),
            sysfs_root=Path(env.get("VOLANT_SYSFS_ROOT", "/sys")).expanduser(),
            vfio_allowlist=_pci_ids(env.get("VOLANT_VFIO_ALLOWLIST", "")),
        )
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(settings, **given).checked()  # type: ignore[arg-type]

    @property
    def database(self) -> Path:
        return self.db_path or self.home / "volant.db"

    @property
    def kernels(self) -> Path:
        return self.kernels_dir or self.home / "kernels"

    @property
    def default_hypervisor(self) -> str:
        """The driver name of `hypervisor` (its aliases resolved)."""
        return HYPERVISORS[self.hypervisor.lower()]

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port (``[::1]:7777`` for IPv6)."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(
                f"listen address {self.listen!r} is not HOST:PORT (e.g. 127.0.0.1:7777); "
                "set --listen or VOLANT_API_LISTEN"
            )
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def bridge_network(self) -> ipaddress.IPv4Interface:
        """The bridge's address within its subnet (``192.168.127.1/24`` by default)."""
        subnet = ipaddress.IPv4Network(self.subnet)
        return ipaddress.IPv4Interface(f"{self.host_ip or next(subnet.hosts())}/{subnet.prefixlen}")

    @property
    def is_loopback_only(self) -> bool:
        """Whether only this host can reach the API (loopback address or a unix socket)."""
        if self.unix_socket is not None:
            return True
        host = self.host_port[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def checked(self) -> Settings:
        """Return self after refusing unusable or unsafe combinations."""
        self.host_port  # noqa: B018 - validates the listen address
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(
                f"log level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        self._check_network()
        if self.hypervisor.lower() not in HYPERVISORS:
            raise SettingsError(
                f"hypervisor {self.hypervisor!r} (VOLANT_HYPERVISOR) is not one of "
                "qemu, cloud-hypervisor"
            )
        if self.api_key is not None and len(self.api_key) < 16:
            raise SettingsError("the API key (VOLANT_API_KEY) must be at least 16 characters")
        if not self.is_loopback_only and not self.api_key and not self.allow_remote_without_key:
            raise SettingsError(
                f"refusing to listen on {self.listen} without an API key: anyone who can reach "
                "it could run VMs. Set VOLANT_API_KEY, listen on a loopback address, or pass "
                "--allow-remote-without-key if the network is trusted"
            )
        return self

    def _check_network(self) -> None:
        if not BRIDGE_NAME.fullmatch(self.bridge):
            raise SettingsError(
                f"bridge name {self.bridge!r} (VOLANT_BRIDGE) must be 1-15 letters, digits, "
                "'_', '.' or '-'"
            )
        try:
            subnet = ipaddress.IPv4Network(self.subnet)
        except ValueError as error:
            raise SettingsError(
                f"subnet {self.subnet!r} (VOLANT_SUBNET) is not an IPv4 network like "
                f"192.168.127.0/24: {error}"
            ) from None
        if not 16 <= subnet.prefixlen <= 30:
            raise SettingsError(
                f"subnet {self.subnet} (VOLANT_SUBNET) must be between /16 and /30 in size"
            )
        if self.host_ip is not None:
            try:
                host = ipaddress.IPv4Address(self.host_ip)
            except ValueError as error:
                raise SettingsError(f"host IP {self.host_ip!r} (VOLANT_HOST_IP): {error}") from None
            if host not in subnet or host in (subnet.network_address, subnet.broadcast_address):
                raise SettingsError(
                    f"host IP {host} (VOLANT_HOST_IP) must be a host address of the subnet "
                    f"{subnet} (VOLANT_SUBNET)"
                )


def _address_list(value: str) -> tuple[str, ...]:
    addresses = tuple(part.strip() for part in value.replace(",", " ").split() if part.strip())
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise SettingsError(
                f"VOLANT_DNS: {address!r} is not an IP address (give a comma-separated list)"
            ) from None
    return addresses


def _pci_ids(value: str) -> tuple[str, ...]:
    try:
        return AllowList.parse(value.replace(",", " ").split()).entries
    except InvalidDeviceError as error:
        raise SettingsError(f"VOLANT_VFIO_ALLOWLIST: {error} (a comma-separated list)") from None


def _optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _flag(env: dict[str, str], name: str) -> bool:
    value = env.get(name, "").lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={env[name]!r}: use 1/true/yes/on or 0/false/no/off")
