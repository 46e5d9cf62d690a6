"""Guest network setup with ioctls: loopback, the NIC, its IPv4 address, default route, DNS.

The address is static (``vm.json``) or, in ``dhcp`` mode, leased by :mod:`kestrel.dhcp`.

No ``ip``/busybox is needed (rootfs images may have none) and the kernel's ``ip=`` parameter
is not used. Failures are collected in a :class:`NetworkReport`, never raised: the agent
stays reachable for diagnosis wherever that is still possible.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import Network

if TYPE_CHECKING:
    from .dhcp import Lease

SIOCADDRT = 0x890B
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFHWADDR = 0x8924
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2
ARPHRD_ETHER = 1

_IFREQ_SIZE = 40
_RTENTRY = struct.Struct("@L16s16s16sHhLPhPLLH0L")  # struct rtentry, native layout
_SYS_NET = "/sys/class/net"


class NetworkReport:
    """What network setup did and what went wrong (served by ``GET /v1/info``)."""

    def __init__(self, interface: str | None) -> None:
        self.interface = interface
        self.steps: list[str] = []
        self.errors: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "ok": self.ok,
            "steps": list(self.steps),
            "errors": list(self.errors),
        }


def configure_network(
    network: Network,
    *,
    resolv_conf: str = "/etc/resolv.conf",
    wait_for_nic_s: float = 2.0,
    hostname: str | None = None,
    dhcp_timeout_s: float = 15.0,
    log: Callable[[str], None] = lambda message: None,
) -> NetworkReport:
    """Bring up ``lo`` and the NIC of ``network``: address, default route, resolv.conf.

    In ``dhcp`` mode the address comes from a DHCP server (sending ``hostname``) and a
    thread keeps the lease, telling ``log`` about renewals and failures.
    """
    report = NetworkReport(None)
    _attempt(report, "lo up", lambda: set_link_up("lo"))
    if network.mac is None:
        report.steps.append("no NIC configured (vsock only)")
        return report
    name = _find_nic(network, wait_for_nic_s, report)
    if name is None:
        return report
    report.interface = name
    if not _attempt(report, f"{name} up", lambda: set_link_up(name)):
        return report
    if network.address is None and network.mode == "dhcp":
        _configure_by_dhcp(report, name, network, resolv_conf, hostname, dhcp_timeout_s, log)
    elif network.address is None:
        report.errors.append(f"{name}: DHCP ({network.mode} mode) is not handled by kestrel yet")
    else:
        prefix, gateway, dns = network.prefix or 0, network.gateway, network.dns
        _configure_address(report, name, network.address, prefix, gateway, dns, resolv_conf)
    return report


def _configure_address(
    report: NetworkReport,
    name: str,
    address: str,
    prefix: int,
    gateway: str | None,
    dns: tuple[str, ...],
    resolv_conf: str,
) -> None:
    if not _attempt(
        report,
        f"{name} address {address}/{prefix}",
        lambda: set_ipv4_address(name, address, prefix),
    ):
        return
    if gateway is not None:
        _attempt(report, f"default route via {gateway}", lambda: add_default_route(gateway))
    if dns:
        _attempt(
            report, f"{resolv_conf}: {' '.join(dns)}", lambda: write_resolv_conf(dns, resolv_conf)
        )


def _configure_by_dhcp(
    report: NetworkReport,
    name: str,
    network: Network,
    resolv_conf: str,
    hostname: str | None,
    timeout_s: float,
    log: Callable[[str], None],
) -> None:
    """Ask for a lease, apply it (``network.dns``, when given, wins over the lease's DNS
    servers) and keep it: the renewal thread applies a changed lease again."""
    from .dhcp import DHCPClient, DHCPError  # only here: most VMs have a static address

    def apply(lease: Lease, report: NetworkReport) -> None:
        dns = network.dns or lease.dns
        _configure_address(
            report, name, lease.address, lease.prefix, lease.gateway, dns, resolv_conf
        )

    def apply_again(lease: Lease) -> None:
        again = NetworkReport(name)
        apply(lease, again)
        for problem in again.errors:
            log(f"{name}: {problem}")

    try:
        client = DHCPClient(name, read_mac(name) or network.mac or "", hostname=hostname)
        lease = client.obtain_lease(timeout_s)
    except DHCPError as error:
        report.errors.append(str(error))
        return
    report.steps.append(f"{name} DHCP lease {lease}")
    apply(lease, report)
    client.keep_lease(lease, log=log, on_change=apply_again)


def _attempt(report: NetworkReport, step: str, action: Any) -> bool:
    try:
        action()
    except OSError as error:
        report.errors.append(f"{step}: {error.strerror or error}")
        return False
    report.steps.append(step)
    return True


def _find_nic(network: Network, wait_s: float, report: NetworkReport) -> str | None:
    """The configured interface, or the one that carries the configured MAC address.

    Drivers register NICs asynchronously after their module loads, so wait a little.
    """
    deadline = time.monotonic() + wait_s
    mac = (network.mac or "").lower()
    while True:
        if os.path.exists(f"{_SYS_NET}/{network.interface}"):
            name = network.interface
            break
        by_mac = interface_with_mac(mac)
        if by_mac is not None:
            report.steps.append(f"{network.interface} not found; using {by_mac} (MAC {mac})")
            return by_mac
        if time.monotonic() >= deadline:
            report.errors.append(
                f"no interface {network.interface} or with MAC {mac} appeared within {wait_s:g} s"
                " (is the virtio_net module loaded?)"
            )
            return None
        time.sleep(0.01)
    current = read_mac(name)
    if mac and current is not None and current != mac:
        _attempt(report, f"{name} MAC {current} -> {mac}", lambda: set_mac_address(name, mac))
    return name


def interface_with_mac(mac: str) -> str | None:
    """The name of the interface whose hardware address is ``mac``, if any."""
    try:
        names = sorted(os.listdir(_SYS_NET))
    except OSError:
        return None
    for name in names:
        if read_mac(name) == mac:
            return name
    return None


def read_mac(name: str) -> str | None:
    """The hardware address of interface ``name`` (lower case), or None."""
    try:
        with open(f"{_SYS_NET}/{name}/address") as file:
            return file.read().strip().lower()
    except OSError:
        return None


def _ifreq(name: str, payload: bytes = b"") -> bytearray:
    encoded = name.encode()
    if len(encoded) > 15:
        raise OSError(errno.EINVAL, f"interface name too long: {name!r}")
    request = bytearray(_IFREQ_SIZE)
    request[: len(encoded)] = encoded
    request[16 : 16 + len(payload)] = payload
    return request


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def _ioctl(request: int, argument: bytearray) -> bytearray:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), request, argument)
    return argument


def set_link_up(name: str) -> None:
    """Set IFF_UP on interface ``name``."""
    flags = struct.unpack_from("h", _ioctl(SIOCGIFFLAGS, _ifreq(name)), 16)[0]
    _ioctl(SIOCSIFFLAGS, _ifreq(name, struct.pack("h", flags | IFF_UP)))


def set_mac_address(name: str, mac: str) -> None:
    """Set the hardware address of ``name`` (the interface must be down)."""
    raw = bytes(int(part, 16) for part in mac.split(":"))
    _ioctl(SIOCSIFHWADDR, _ifreq(name, struct.pack("H6s", ARPHRD_ETHER, raw)))


def set_ipv4_address(name: str, address: str, prefix: int) -> None:
    """Give ``name`` the address ``address/prefix`` (replacing its primary IPv4 address)."""
    netmask = socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))
    _ioctl(SIOCSIFADDR, _ifreq(name, _sockaddr_in(address)))
    _ioctl(SIOCSIFNETMASK, _ifreq(name, _sockaddr_in(netmask)))


def add_default_route(gateway: str) -> None:
    """Add ``default via gateway``; an existing identical route is not an error."""
    zero = _sockaddr_in("0.0.0.0")
    entry = _RTENTRY.pack(
        0, zero, _sockaddr_in(gateway), zero, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0
    )
    with contextlib.suppress(FileExistsError):
        _ioctl(SIOCADDRT, bytearray(entry))


def write_resolv_conf(servers: tuple[str, ...] | list[str], path: str = "/etc/resolv.conf") -> None:
    """Replace ``path`` (following a symlink) with one ``nameserver`` line per server.

    Written to a temporary file and renamed over the old one; where the file is a mount
    point (containers bind-mount it) it is rewritten in place instead.
    """
    content = "".join(f"nameserver {server}\n" for server in servers)
    target = os.path.realpath(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.kestrel-{os.getpid()}"
    with open(temporary, "w") as file:
        file.write(content)
    os.chmod(temporary, 0o644)
    try:
        os.replace(temporary, target)
    except OSError as error:
        os.unlink(temporary)
        if error.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        with open(target, "w") as file:
            file.write(content)
