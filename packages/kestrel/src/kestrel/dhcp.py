"""A DHCPv4 client (RFC 2131) for the ``dhcp`` network mode.

volantd runs dnsmasq on the host bridge with a reservation for the VM's MAC address; the
guest asks for it here: DISCOVER → OFFER → REQUEST → ACK (a NAK starts over), or
DISCOVER → ACK where the server does Rapid Commit (RFC 4039, as volantd's does). A daemon
thread then renews the lease at T1 (unicast to its server) and rebinds at T2 (broadcast).
Packets are built and read by pure functions; the socket is a UDP socket on port 68 bound
to the NIC (replies are broadcast to us while the NIC has no address).
"""

from __future__ import annotations

import itertools
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from .errors import KestrelError

CLIENT_PORT, SERVER_PORT, BROADCAST = 68, 67, "255.255.255.255"
BOOTREQUEST, BOOTREPLY = 1, 2
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
SUBNET_MASK, ROUTER, DNS_SERVERS, HOSTNAME, DOMAIN_NAME = 1, 3, 6, 12, 15
REQUESTED_ADDRESS, LEASE_TIME, MESSAGE_TYPE, SERVER_ID, PARAMETER_REQUEST_LIST = 50, 51, 53, 54, 55
MESSAGE, RENEWAL_TIME, REBINDING_TIME, CLIENT_ID, RAPID_COMMIT = 56, 58, 59, 61, 80
PARAMETERS = bytes((SUBNET_MASK, ROUTER, DNS_SERVERS, DOMAIN_NAME, LEASE_TIME, RENEWAL_TIME,
                    REBINDING_TIME, SERVER_ID))  # fmt: skip
INFINITE = 0xFFFFFFFF
"""The lease time of an address that is ours for good (no renewal)."""
DEFAULT_TIMEOUT_S = 15.0
BROADCAST_FLAG = 0x8000
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128sI")  # BOOTP fixed part, magic cookie
_MAGIC_COOKIE = 0x63825363
_NO_ADDRESS = "0.0.0.0"


class DHCPError(KestrelError):
    """No lease: nobody answered, the server refused (NAK), or its answer was unusable."""


class LeaseRefused(DHCPError):
    """The server answered a renewal with NAK: the address is no longer ours."""


class Message(NamedTuple):
    """A BOOTP message with its DHCP options (code → raw value)."""

    op: int
    xid: int
    chaddr: bytes
    ciaddr: str = _NO_ADDRESS
    yiaddr: str = _NO_ADDRESS
    flags: int = 0
    options: Mapping[int, bytes] = {}

    @property
    def type(self) -> int | None:
        """The DHCP message type (option 53), e.g. :data:`OFFER`."""
        value = self.options.get(MESSAGE_TYPE)
        return value[0] if value else None


class Lease(NamedTuple):
    """An address leased to us; the times count from ``obtained`` (``time.monotonic()``)."""

    address: str
    prefix: int
    gateway: str | None
    dns: tuple[str, ...]
    server: str
    lease_s: int
    t1_s: int
    t2_s: int
    obtained: float

    @property
    def infinite(self) -> bool:
        return self.lease_s == INFINITE

    def __str__(self) -> str:
        length = "forever" if self.infinite else f"for {self.lease_s} s"
        return f"{self.address}/{self.prefix} from {self.server} {length}"


def encode_message(message: Message) -> bytes:
    """The wire form of ``message``: its options in order, then END."""
    addresses = (message.ciaddr, message.yiaddr, _NO_ADDRESS, _NO_ADDRESS)
    header = _HEADER.pack(
        *(message.op, 1, len(message.chaddr), 0, message.xid, 0, message.flags),
        *(socket.inet_aton(address) for address in addresses),
        *(message.chaddr, b"", b"", _MAGIC_COOKIE),
    )
    options = b"".join(bytes((code, len(value))) + value for code, value in message.options.items())
    return header + options + b"\xff"


def decode_message(data: bytes) -> Message:
    """Read a BOOTP/DHCP message (ValueError if it is none); repeated options are joined."""
    if len(data) < _HEADER.size:
        raise ValueError(f"{len(data)} bytes is too short for a DHCP message")
    op, _, hlen, _, xid, _, flags, ciaddr, yiaddr, _, _, chaddr, _, _, magic = _HEADER.unpack_from(
        data
    )
    if magic != _MAGIC_COOKIE or not 1 <= hlen <= 16:
        raise ValueError("not a DHCP message (bad magic cookie or hardware address length)")
    options: dict[int, bytes] = {}
    at = _HEADER.size
    while at < len(data) and data[at] != 255:  # END
        if data[at] == 0:  # PAD
            at += 1
            continue
        end = at + 2 + (data[at + 1] if at + 1 < len(data) else 0)
        if at + 1 >= len(data) or end > len(data):
            raise ValueError(f"option {data[at]} runs past the end of the message")
        options[data[at]] = options.get(data[at], b"") + data[at + 2 : end]
        at = end
    ciaddr, yiaddr = socket.inet_ntoa(ciaddr), socket.inet_ntoa(yiaddr)
    return Message(op, xid, chaddr[:hlen], ciaddr, yiaddr, flags, options)


def client_message(
    kind: int,
    xid: int,
    mac: bytes,
    *,
    ciaddr: str = _NO_ADDRESS,
    requested: str | None = None,
    server: str | None = None,
    hostname: str | None = None,
) -> Message:
    """A DISCOVER (offering Rapid Commit) or a REQUEST from ``mac``; without ``ciaddr`` it asks
    for broadcast replies."""
    options = {MESSAGE_TYPE: bytes((kind,)), CLIENT_ID: b"\x01" + mac}
    if kind == DISCOVER:
        options[RAPID_COMMIT] = b""
    if requested is not None:
        options[REQUESTED_ADDRESS] = socket.inet_aton(requested)
    if server is not None:
        options[SERVER_ID] = socket.inet_aton(server)
    if hostname:
        options[HOSTNAME] = hostname.encode()[:255]
    options[PARAMETER_REQUEST_LIST] = PARAMETERS
    flags = BROADCAST_FLAG if ciaddr == _NO_ADDRESS else 0
    return Message(BOOTREQUEST, xid, mac, ciaddr=ciaddr, flags=flags, options=options)


def answers(reply: Message, xid: int, mac: bytes, kinds: tuple[int, ...]) -> bool:
    """Whether ``reply`` is a server's answer of one of ``kinds`` to our transaction ``xid``."""
    ours = reply.op == BOOTREPLY and reply.xid == xid and reply.chaddr == mac
    return ours and reply.type in kinds


def prefix_from_mask(mask: bytes) -> int:
    """The prefix length of a contiguous subnet mask (ValueError for anything else)."""
    bits = int.from_bytes(mask, "big")
    prefix = bin(bits).count("1")
    if len(mask) != 4 or bits != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise ValueError(f"subnet mask {mask.hex()} is not a contiguous IPv4 mask")
    return prefix


def lease_from_ack(ack: Message, server: str, obtained: float) -> Lease:
    """The lease an ACK grants (ValueError for malformed options). Without a subnet mask the
    address's class decides (RFC 1122), without a lease time the address is ours for good
    (BOOTP); T1 and T2 default to 0.5 and 0.875 of the lease time (RFC 2131 §4.4.5)."""
    options, first = ack.options, int(ack.yiaddr.split(".")[0])
    mask = options.get(SUBNET_MASK)
    prefix = prefix_from_mask(mask) if mask else 8 if first < 128 else 16 if first < 192 else 24
    routers, servers = _addresses(options.get(ROUTER)), _addresses(options.get(SERVER_ID))
    lease_s = _seconds(options.get(LEASE_TIME), INFINITE)
    infinite = lease_s == INFINITE
    return Lease(
        address=ack.yiaddr,
        prefix=prefix,
        gateway=routers[0] if routers else None,
        dns=_addresses(options.get(DNS_SERVERS)),
        server=servers[0] if servers else server,
        lease_s=lease_s,
        t1_s=INFINITE if infinite else _seconds(options.get(RENEWAL_TIME), lease_s // 2),
        t2_s=INFINITE if infinite else _seconds(options.get(REBINDING_TIME), lease_s * 7 // 8),
        obtained=obtained,
    )


def _addresses(raw: bytes | None) -> tuple[str, ...]:
    raw = raw or b""
    if len(raw) % 4:
        raise ValueError(f"an address list of {len(raw)} bytes")
    return tuple(socket.inet_ntoa(raw[at : at + 4]) for at in range(0, len(raw), 4))


def _seconds(raw: bytes | None, default: int) -> int:
    return int(struct.unpack("!I", raw)[0]) if raw and len(raw) == 4 else default


def open_client_socket(interface: str) -> socket.socket:
    """A UDP socket on port 68 of ``interface`` only, allowed to broadcast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind((_NO_ADDRESS, CLIENT_PORT))
    except OSError:
        sock.close()
        raise
    return sock


class DHCPClient:
    """Leases for the NIC ``interface`` whose hardware address is ``mac`` (``aa:bb:...``).

    ``open_socket`` gives the socket of one exchange (a test may pass a fake server).
    """

    def __init__(
        self,
        interface: str,
        mac: str,
        *,
        hostname: str | None = None,
        open_socket: Callable[[str], socket.socket] = open_client_socket,
    ) -> None:
        self.interface, self.hostname = interface, hostname
        self.mac = bytes.fromhex(mac.replace(":", ""))
        if len(self.mac) != 6:
            raise DHCPError(f"{interface}: not an Ethernet MAC address: {mac!r}")
        self._open_socket = open_socket

    def obtain_lease(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Lease:
        """DISCOVER and REQUEST the first offer until one is ACKed, or DHCPError."""
        deadline = time.monotonic() + timeout_s
        heard, refused = "no server answered the DISCOVER with an OFFER", ""
        while time.monotonic() < deadline:
            xid, obtained = random.getrandbits(32), time.monotonic()
            discover = client_message(DISCOVER, xid, self.mac, hostname=self.hostname)
            offer = self._exchange(discover, BROADCAST, (OFFER, ACK), deadline)
            server_id = offer.options.get(SERVER_ID, b"") if offer else b""
            if offer is None or len(server_id) != 4:  # without it no REQUEST can name the server
                break
            server = socket.inet_ntoa(server_id)
            if offer.type == ACK and RAPID_COMMIT in offer.options:
                return self._lease(offer, server, obtained)
            heard = f"OFFER of {offer.yiaddr} from {server}, but no ACK to the REQUEST"
            obtained = time.monotonic()
            request = client_message(
                REQUEST, xid, self.mac, requested=offer.yiaddr, server=server,
                hostname=self.hostname,
            )  # fmt: skip
            reply = self._exchange(request, BROADCAST, (ACK, NAK), deadline)
            if reply is not None and reply.type == ACK:
                return self._lease(reply, server, obtained)
            if reply is not None:  # NAK: start over (RFC 2131 §3.1.4)
                refused = f"; last NAK from {server} for {offer.yiaddr}{_reason(reply)}"
        raise DHCPError(
            f"{self.interface}: no DHCP lease within {timeout_s:g} s: {heard}{refused}"
            " (is a DHCP server, e.g. volantd's dnsmasq, serving this network?)"
        )

    def renew_lease(self, lease: Lease, *, rebind: bool = False, timeout_s: float = 10.0) -> Lease:
        """REQUEST ``lease`` again from its server, or from anyone with ``rebind``.

        DHCPError without an answer, LeaseRefused for a NAK."""
        xid, obtained = random.getrandbits(32), time.monotonic()
        request = client_message(
            REQUEST, xid, self.mac, ciaddr=lease.address, hostname=self.hostname
        )
        destination = BROADCAST if rebind else lease.server
        reply = self._exchange(request, destination, (ACK, NAK), obtained + timeout_s)
        if reply is None:
            raise DHCPError(f"{self.interface}: no answer from {destination} to renew {lease}")
        if reply.type == NAK:
            raise LeaseRefused(f"{self.interface}: {destination} refused {lease}{_reason(reply)}")
        return self._lease(reply, lease.server, obtained)

    def keep_lease(
        self,
        lease: Lease,
        *,
        log: Callable[[str], None],
        on_change: Callable[[Lease], None] | None = None,
        stop: threading.Event | None = None,
    ) -> threading.Thread | None:
        """Keep ``lease`` from a daemon thread (none for an infinite lease) until ``stop``.

        Renews at T1, rebinds at T2; after a NAK or expiry it asks anew (keeping the address
        meanwhile: the agent must stay reachable). ``on_change`` gets each new lease whose
        address, prefix, gateway or DNS servers differ from the one before."""
        if lease.infinite:
            return None
        args = (lease, log, on_change or (lambda _: None), stop or threading.Event())
        thread = threading.Thread(target=self._keep, args=args, daemon=True)
        thread.name = f"dhcp-{self.interface}"
        thread.start()
        return thread

    def _keep(
        self,
        lease: Lease,
        log: Callable[[str], None],
        on_change: Callable[[Lease], None],
        stop: threading.Event,
    ) -> None:
        while not lease.infinite and not stop.is_set():
            now = time.monotonic()
            t1, t2, end = (lease.obtained + s for s in (lease.t1_s, lease.t2_s, lease.lease_s))
            if now < t1:
                stop.wait(t1 - now)
                continue
            try:
                if now < end:
                    new = self.renew_lease(lease, rebind=now >= t2)
                else:
                    log(f"{self.interface}: DHCP lease {lease} ended; asking for a new one")
                    new = self.obtain_lease(60.0)
            except LeaseRefused as error:
                log(str(error))
                lease = lease._replace(lease_s=0, t1_s=0, t2_s=0)  # ended
                continue
            except DHCPError as error:  # RFC 2131 §4.4.5: half the time left, at least 60 s
                log(str(error))
                left = (t2 if now < t2 else end) - time.monotonic()
                stop.wait(60.0 if left <= 0 else left / 2 if left > 120 else left)
                continue
            log(f"{self.interface}: DHCP lease {new} renewed")
            if (new.address, new.prefix, new.gateway, new.dns) != (
                lease.address, lease.prefix, lease.gateway, lease.dns,
            ):  # fmt: skip
                on_change(new)
            lease = new

    def _exchange(
        self, message: Message, destination: str, kinds: tuple[int, ...], deadline: float
    ) -> Message | None:
        """Send ``message`` and resend it after 1, 2, 4, 4... s (±0.1 s) until a reply of
        ``kinds`` to it arrives (returned) or ``deadline`` passes (None)."""
        packet = encode_message(message)
        try:
            with self._open_socket(self.interface) as sock:
                for attempt in itertools.count():
                    sock.sendto(packet, (destination, SERVER_PORT))
                    backoff = min(2.0**attempt, 4.0) + random.uniform(-0.1, 0.1)
                    resend = min(deadline, time.monotonic() + backoff)
                    while (left := resend - time.monotonic()) > 0:
                        reply = _receive(sock, left)
                        if reply is not None and answers(reply, message.xid, self.mac, kinds):
                            return reply
                    if time.monotonic() >= deadline:
                        return None
        except OSError as error:
            problem = error.strerror or error
            raise DHCPError(f"{self.interface}: DHCP via UDP port 68 failed: {problem}") from None
        return None  # not reached: itertools.count() never ends

    def _lease(self, ack: Message, server: str, obtained: float) -> Lease:
        try:
            return lease_from_ack(ack, server, obtained)
        except ValueError as error:
            raise DHCPError(f"{self.interface}: unusable DHCP ACK from {server}: {error}") from None


def _receive(sock: socket.socket, timeout_s: float) -> Message | None:
    """The next DHCP message, or None after ``timeout_s`` or for something else."""
    sock.settimeout(timeout_s)
    try:
        return decode_message(sock.recv(4096))
    except (TimeoutError, ValueError):
        return None


def _reason(reply: Message) -> str:
    message = reply.options.get(MESSAGE)
    return f" ({message.decode(errors='replace')})" if message else ""
