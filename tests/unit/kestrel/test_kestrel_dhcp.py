"""kestrel's DHCP client: the packets it builds and reads, and its exchanges with a scripted
server (the real dnsmasq is in tests/integration/kestrel/test_kestrel_dhcp_dnsmasq.py)."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kestrel.dhcp import (
    ACK,
    BROADCAST,
    CLIENT_ID,
    DISCOVER,
    DNS_SERVERS,
    DOMAIN_NAME,
    HOSTNAME,
    INFINITE,
    LEASE_TIME,
    MESSAGE,
    MESSAGE_TYPE,
    NAK,
    OFFER,
    PARAMETER_REQUEST_LIST,
    RAPID_COMMIT,
    REBINDING_TIME,
    RENEWAL_TIME,
    REQUEST,
    REQUESTED_ADDRESS,
    ROUTER,
    SERVER_ID,
    SUBNET_MASK,
    DHCPClient,
    DHCPError,
    Lease,
    LeaseRefused,
    Message,
    answers,
    client_message,
    decode_message,
    encode_message,
    lease_from_ack,
    prefix_from_mask,
)

MAC = "52:54:00:12:34:56"
RAW_MAC = bytes.fromhex("525400123456")
SERVER = "192.168.127.1"


def ip(*addresses: str) -> bytes:
    return b"".join(socket.inet_aton(address) for address in addresses)


def seconds(value: int) -> bytes:
    return struct.pack("!I", value)


def reply(
    kind: int, request: Message, address: str, extra: dict[int, bytes] | None = None
) -> Message:
    """A server's answer to ``request`` giving ``address``, as dnsmasq would send it."""
    options = {MESSAGE_TYPE: bytes((kind,)), SERVER_ID: ip(SERVER)}
    if kind != NAK:
        options |= {SUBNET_MASK: ip("255.255.255.0"), ROUTER: ip(SERVER)}
        options |= {DNS_SERVERS: ip(SERVER), LEASE_TIME: seconds(3600)}
    return Message(2, request.xid, request.chaddr, yiaddr=address, options=options | (extra or {}))


Script = Callable[[Message, str], list[Message]]


class ScriptedServer:
    """Stands in for the client's UDP socket: each message sent is answered by ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sent: list[tuple[str, Message]] = []
        self._replies: list[bytes] = []
        self._timeout = 0.0

    def open(self, interface: str) -> Any:
        assert interface == "eth0"
        return self

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._replies.clear()  # answers to a closed socket are lost

    def sendto(self, packet: bytes, address: tuple[str, int]) -> None:
        assert address[1] == 67
        message = decode_message(packet)
        self.sent.append((address[0], message))
        self._replies += [encode_message(answer) for answer in self.script(message, address[0])]

    def settimeout(self, timeout: float) -> None:
        self._timeout = timeout

    def recv(self, size: int) -> bytes:
        if self._replies:
            return self._replies.pop(0)
        time.sleep(self._timeout)
        raise TimeoutError

    def kinds(self) -> list[int | None]:
        return [message.type for _, message in self.sent]


def reserved(address: str = "192.168.127.23") -> Script:
    """A server that offers and acknowledges ``address``."""

    def script(message: Message, destination: str) -> list[Message]:
        return [reply(OFFER if message.type == DISCOVER else ACK, message, address)]

    return script


def client(server: ScriptedServer, hostname: str | None = "vm1") -> DHCPClient:
    return DHCPClient("eth0", MAC, hostname=hostname, open_socket=server.open)


# --- packets ---


def test_a_discover_is_a_broadcast_bootp_request_naming_the_client_and_its_wishes() -> None:
    packet = encode_message(client_message(DISCOVER, 0x1234ABCD, RAW_MAC, hostname="vm1"))
    op, htype, hlen, hops, xid, secs, flags = struct.unpack_from("!BBBBIHH", packet)
    assert (op, htype, hlen, hops, xid, secs, flags) == (1, 1, 6, 0, 0x1234ABCD, 0, 0x8000)
    assert packet[12:28] == bytes(16)  # ciaddr, yiaddr, siaddr, giaddr
    assert packet[28:34] == RAW_MAC and packet[34:44] == bytes(10)
    assert packet[236:240] == bytes.fromhex("63825363") and packet[-1] == 255
    options = decode_message(packet).options
    assert options[MESSAGE_TYPE] == bytes((DISCOVER,))
    assert options[CLIENT_ID] == b"\x01" + RAW_MAC
    assert options[HOSTNAME] == b"vm1"
    assert set(options[PARAMETER_REQUEST_LIST]) >= {1, 3, 6, 15, 51, 54, 58, 59}
    assert options[RAPID_COMMIT] == b""  # an ACK straight away is welcome (RFC 4039)
    assert REQUESTED_ADDRESS not in options and SERVER_ID not in options


def test_a_request_names_the_offered_address_and_the_server() -> None:
    request = client_message(REQUEST, 7, RAW_MAC, requested="192.168.127.23", server=SERVER)
    assert request.options[REQUESTED_ADDRESS] == ip("192.168.127.23")
    assert request.options[SERVER_ID] == ip(SERVER)
    assert HOSTNAME not in request.options and RAPID_COMMIT not in request.options


def test_a_renewal_request_carries_the_address_and_asks_for_no_broadcast() -> None:
    request = client_message(REQUEST, 7, RAW_MAC, ciaddr="192.168.127.23")
    assert request.ciaddr == "192.168.127.23" and request.flags == 0
    assert REQUESTED_ADDRESS not in request.options and SERVER_ID not in request.options


def test_messages_round_trip() -> None:
    request = client_message(DISCOVER, 99, RAW_MAC, hostname="web")
    assert decode_message(encode_message(request)) == request
    ack = reply(ACK, request, "10.1.2.3", {DOMAIN_NAME: b"example.test"})
    assert decode_message(encode_message(ack)) == ack


def test_pad_options_are_skipped_and_split_options_joined() -> None:
    header = encode_message(Message(2, 5, RAW_MAC, options={}))[:-1]
    options = bytes((0, 0, 6, 4)) + ip("10.0.0.1") + bytes((6, 4)) + ip("10.0.0.2") + b"\xff"
    assert decode_message(header + options + b"junk after END").options == {
        DNS_SERVERS: ip("10.0.0.1", "10.0.0.2")
    }


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x02" * 100, "too short"),
        (bytes(240), "not a DHCP message"),
        (encode_message(Message(2, 5, RAW_MAC, options={}))[:-1] + bytes((6, 8, 1)), "runs past"),
        (encode_message(Message(2, 5, RAW_MAC, options={}))[:-1] + bytes((6,)), "runs past"),
    ],
)
def test_what_is_not_a_dhcp_message_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_message(data)


@pytest.mark.parametrize(
    ("mask", "prefix"),
    [("255.255.255.0", 24), ("255.255.0.0", 16), ("255.255.255.252", 30), ("0.0.0.0", 0)],
)
def test_the_prefix_comes_from_the_subnet_mask(mask: str, prefix: int) -> None:
    assert prefix_from_mask(ip(mask)) == prefix


def test_a_mask_with_holes_is_refused() -> None:
    with pytest.raises(ValueError, match="not a contiguous"):
        prefix_from_mask(ip("255.0.255.0"))


# --- leases ---


def ack(options: dict[int, bytes] | None = None) -> Message:
    return reply(ACK, client_message(REQUEST, 1, RAW_MAC), "192.168.127.23", options)


def test_a_lease_carries_address_prefix_gateway_dns_and_times() -> None:
    options = {
        SUBNET_MASK: ip("255.255.0.0"),
        ROUTER: ip("192.168.0.254", "192.168.0.253"),
        DNS_SERVERS: ip("1.1.1.1", "9.9.9.9"),
        LEASE_TIME: seconds(600),
        RENEWAL_TIME: seconds(100),
        REBINDING_TIME: seconds(500),
    }
    lease = lease_from_ack(ack(options), "0.0.0.0", 12.5)
    assert lease == Lease(
        address="192.168.127.23",
        prefix=16,
        gateway="192.168.0.254",
        dns=("1.1.1.1", "9.9.9.9"),
        server=SERVER,
        lease_s=600,
        t1_s=100,
        t2_s=500,
        obtained=12.5,
    )
    assert str(lease) == "192.168.127.23/16 from 192.168.127.1 for 600 s"


def test_t1_and_t2_default_to_half_and_seven_eighths_of_the_lease() -> None:
    lease = lease_from_ack(ack({LEASE_TIME: seconds(3600)}), SERVER, 0.0)
    assert (lease.lease_s, lease.t1_s, lease.t2_s) == (3600, 1800, 3150)


def test_an_infinite_lease_has_no_renewal() -> None:
    for lease_time in (seconds(INFINITE), b""):  # no lease time: BOOTP, for good
        lease = lease_from_ack(ack({LEASE_TIME: lease_time}), SERVER, 0.0)
        assert lease.infinite and lease.t1_s == lease.t2_s == INFINITE
        assert str(lease).endswith("forever")


def test_without_mask_router_dns_or_server_id() -> None:
    bare = Message(2, 1, RAW_MAC, yiaddr="10.0.0.7", options={MESSAGE_TYPE: bytes((ACK,))})
    lease = lease_from_ack(bare, "10.0.0.1", 0.0)
    assert (lease.prefix, lease.gateway, lease.dns, lease.server) == (8, None, (), "10.0.0.1")
    assert lease_from_ack(bare._replace(yiaddr="172.16.0.7"), "x", 0.0).prefix == 16
    assert lease_from_ack(bare._replace(yiaddr="192.168.5.7"), "x", 0.0).prefix == 24


def test_a_malformed_address_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="address list of 5 bytes"):
        lease_from_ack(ack({DNS_SERVERS: b"\x01\x01\x01\x01\x02"}), SERVER, 0.0)


def test_only_answers_to_our_transaction_and_hardware_address_count() -> None:
    request = client_message(DISCOVER, 42, RAW_MAC)
    offer = reply(OFFER, request, "192.168.127.23")
    assert answers(offer, 42, RAW_MAC, (OFFER,))
    assert not answers(offer._replace(xid=43), 42, RAW_MAC, (OFFER,))
    assert not answers(offer._replace(chaddr=bytes(6)), 42, RAW_MAC, (OFFER,))
    assert not answers(offer._replace(op=1), 42, RAW_MAC, (OFFER,))
    assert not answers(offer, 42, RAW_MAC, (ACK, NAK))


# --- exchanges with a scripted server ---


def test_discover_offer_request_ack() -> None:
    server = ScriptedServer(reserved())
    lease = client(server).obtain_lease(timeout_s=5)
    assert (lease.address, lease.prefix, lease.gateway) == ("192.168.127.23", 24, SERVER)
    assert (lease.dns, lease.server, lease.lease_s) == ((SERVER,), SERVER, 3600)
    assert lease.obtained <= time.monotonic()
    (_, discover), (destination, request) = server.sent
    assert destination == BROADCAST and request.xid == discover.xid
    assert request.options[REQUESTED_ADDRESS] == ip("192.168.127.23")
    assert request.options[SERVER_ID] == ip(SERVER)
    assert request.options[HOSTNAME] == b"vm1" and request.flags == 0x8000


def test_a_rapid_commit_ack_answers_the_discover() -> None:
    rapid = {RAPID_COMMIT: b"", LEASE_TIME: seconds(INFINITE)}

    def script(message: Message, destination: str) -> list[Message]:
        return [reply(ACK, message, "192.168.127.23", rapid)]

    server = ScriptedServer(script)
    lease = client(server).obtain_lease(timeout_s=5)
    assert (lease.address, lease.server, lease.infinite) == ("192.168.127.23", SERVER, True)
    assert server.kinds() == [DISCOVER]


def test_answers_to_other_transactions_or_clients_are_ignored() -> None:
    def script(message: Message, destination: str) -> list[Message]:
        kind = OFFER if message.type == DISCOVER else ACK
        return [
            reply(kind, message._replace(xid=message.xid ^ 1), "192.168.127.66"),
            reply(kind, message._replace(chaddr=bytes(6)), "192.168.127.77"),
            Message(1, message.xid, message.chaddr, options={}),  # another client's request
            reply(kind, message, "192.168.127.23"),
        ]

    server = ScriptedServer(script)
    started = time.monotonic()
    assert client(server).obtain_lease(timeout_s=5).address == "192.168.127.23"
    assert server.kinds() == [DISCOVER, REQUEST] and time.monotonic() - started < 0.5


def test_a_nak_starts_over_with_a_new_discover() -> None:
    offers = iter(["192.168.127.50", "192.168.127.23"])
    naks = iter([True, False])

    def script(message: Message, destination: str) -> list[Message]:
        if message.type == DISCOVER:
            return [reply(OFFER, message, next(offers))]
        address = socket.inet_ntoa(message.options[REQUESTED_ADDRESS])
        if next(naks):
            return [reply(NAK, message, "0.0.0.0", {MESSAGE: b"address taken"})]
        return [reply(ACK, message, address)]

    server = ScriptedServer(script)
    assert client(server).obtain_lease(timeout_s=5).address == "192.168.127.23"
    assert server.kinds() == [DISCOVER, REQUEST, DISCOVER, REQUEST]
    assert server.sent[0][1].xid != server.sent[2][1].xid


def test_a_silent_network_is_a_clear_error_after_the_timeout() -> None:
    server = ScriptedServer(lambda message, destination: [])
    started = time.monotonic()
    with pytest.raises(DHCPError, match=r"^eth0: no DHCP lease within 1.5 s: no server answered"):
        client(server).obtain_lease(timeout_s=1.5)
    assert 1.5 <= time.monotonic() - started < 2.5
    assert server.kinds() == [DISCOVER, DISCOVER]  # resent after about 1 s


def test_an_offer_without_an_ack_is_reported() -> None:
    def script(message: Message, destination: str) -> list[Message]:
        return [reply(OFFER, message, "192.168.127.23")] if message.type == DISCOVER else []

    with pytest.raises(
        DHCPError, match=re.escape("OFFER of 192.168.127.23 from 192.168.127.1, but no ACK")
    ):
        client(ScriptedServer(script)).obtain_lease(timeout_s=1.2)


def test_repeated_naks_are_reported_with_the_servers_reason() -> None:
    def script(message: Message, destination: str) -> list[Message]:
        if message.type == DISCOVER:
            return [reply(OFFER, message, "192.168.127.23")]
        return [reply(NAK, message, "0.0.0.0", {MESSAGE: b"wrong network"})]

    with pytest.raises(
        DHCPError, match=r"; last NAK from 192\.168\.127\.1 for 192\.168\.127\.23 \(wrong network\)"
    ):
        client(ScriptedServer(script)).obtain_lease(timeout_s=0.3)


def leased(lease_s: int = 3600, t1_s: int = 1800, t2_s: int = 3150) -> Lease:
    return Lease("192.168.127.23", 24, SERVER, (SERVER,), SERVER, lease_s, t1_s, t2_s, 0.0)


def test_renewing_asks_the_server_by_unicast_and_rebinding_asks_everyone() -> None:
    server = ScriptedServer(reserved())
    dhcp = client(server)
    renewed = dhcp.renew_lease(leased())
    assert renewed.address == "192.168.127.23" and renewed.obtained > 0
    rebound = dhcp.renew_lease(leased(), rebind=True)
    assert rebound.address == "192.168.127.23"
    (to_server, renewal), (to_all, rebinding) = server.sent
    assert (to_server, to_all) == (SERVER, BROADCAST)
    for request in (renewal, rebinding):
        assert request.type == REQUEST and request.ciaddr == "192.168.127.23"
        assert request.flags == 0 and REQUESTED_ADDRESS not in request.options


def test_a_renewal_nak_means_the_lease_is_gone() -> None:
    server = ScriptedServer(lambda message, destination: [reply(NAK, message, "0.0.0.0")])
    with pytest.raises(
        LeaseRefused, match=re.escape("eth0: 192.168.127.1 refused 192.168.127.23/24")
    ):
        client(server).renew_lease(leased())


def test_an_unanswered_renewal_is_an_error() -> None:
    with pytest.raises(DHCPError, match=re.escape("no answer from 192.168.127.1 to renew")):
        client(ScriptedServer(lambda m, d: [])).renew_lease(leased(), timeout_s=0.2)


def test_an_infinite_lease_needs_no_keeping() -> None:
    forever = leased(INFINITE, INFINITE, INFINITE)
    assert client(ScriptedServer(reserved())).keep_lease(forever, log=print) is None


def keep(server: ScriptedServer, lease: Lease) -> tuple[list[str], list[Lease]]:
    """Let a keeper renew ``lease`` until it has a different one; its log and changes."""
    logged: list[str] = []
    changes: list[Lease] = []
    stop = threading.Event()
    thread = client(server).keep_lease(
        lease, log=logged.append, on_change=changes.append, stop=stop
    )
    assert thread is not None and thread.daemon
    deadline = time.monotonic() + 5
    while not changes and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    return logged, changes


def test_the_keeper_renews_at_t1_and_reports_a_changed_lease() -> None:
    server = ScriptedServer(reserved("192.168.127.24"))
    due = leased(t1_s=0)._replace(obtained=time.monotonic())
    logged, changes = keep(server, due)
    assert [lease.address for lease in changes] == ["192.168.127.24"]
    assert server.sent[0][0] == SERVER  # renewing: unicast
    assert logged == ["eth0: DHCP lease 192.168.127.24/24 from 192.168.127.1 for 3600 s renewed"]


def test_the_keeper_rebinds_after_t2_and_starts_over_after_a_nak() -> None:
    def script(message: Message, destination: str) -> list[Message]:
        if message.type == DISCOVER:
            return [reply(OFFER, message, "192.168.127.30")]
        if message.ciaddr != "0.0.0.0":
            return [reply(NAK, message, "0.0.0.0")]
        return [reply(ACK, message, "192.168.127.30")]

    server = ScriptedServer(script)
    due = leased(t1_s=0, t2_s=0)._replace(obtained=time.monotonic())
    logged, changes = keep(server, due)
    assert [lease.address for lease in changes] == ["192.168.127.30"]
    assert [(destination, message.type) for destination, message in server.sent] == [
        (BROADCAST, REQUEST),  # rebinding
        (BROADCAST, DISCOVER),
        (BROADCAST, REQUEST),
    ]
    assert "refused" in logged[0] and "ended; asking for a new one" in logged[1]


def test_a_malformed_mac_address_is_a_dhcp_error_naming_the_interface() -> None:
    with pytest.raises(DHCPError, match="eth0: not an Ethernet MAC address: '52:54:00'"):
        DHCPClient("eth0", "52:54:00")
