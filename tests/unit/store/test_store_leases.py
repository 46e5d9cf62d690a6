"""Host port and guest IP leases: never handed out twice, idempotent per VM."""

from __future__ import annotations

import pytest

from volantd.store import ConflictError, Database


def test_a_port_lease_takes_the_first_free_candidate(db: Database) -> None:
    assert db.ports.lease("web-1", "agent", [20000, 20001, 20002]) == 20000
    assert db.ports.lease("web-2", "agent", [20000, 20001, 20002]) == 20001
    assert db.ports.lease("web-1", "expose:http", iter([20000, 20001, 20002])) == 20002


def test_leasing_again_for_the_same_purpose_returns_the_held_port(db: Database) -> None:
    port = db.ports.lease("web-1", "agent", range(20000, 20010))
    assert db.ports.lease("web-1", "agent", range(20005, 20010)) == port
    assert [(lease.port, lease.purpose) for lease in db.ports.leases("web-1")] == [(port, "agent")]


def test_no_free_candidate_is_a_conflict(db: Database) -> None:
    db.ports.lease("web-1", "agent", [20000])
    with pytest.raises(ConflictError, match=r'no free host port for vm "web-2" \(agent\)'):
        db.ports.lease("web-2", "agent", [20000])
    with pytest.raises(ConflictError):
        db.ports.lease("web-2", "agent", [])


def test_released_ports_can_be_leased_again(db: Database) -> None:
    db.ports.lease("web-1", "agent", [20000])
    db.ports.lease("web-1", "expose:http", [20001])
    db.ports.lease("web-2", "agent", [20002])
    assert db.ports.release("web-1") == 2
    assert db.ports.leases("web-1") == []
    assert [(lease.port, lease.vm_name) for lease in db.ports.all()] == [(20002, "web-2")]
    assert db.ports.lease("web-3", "agent", [20000]) == 20000


def test_seeding_is_additive_and_harmless_to_repeat(db: Database) -> None:
    assert db.ips.seed("vbr0", ["10.0.0.2", "10.0.0.3"]) == 2
    assert db.ips.seed("vbr0", ["10.0.0.3", "10.0.0.4"]) == 1
    with pytest.raises(ConflictError, match=r"address 10.0.0.4 already belongs to network vbr0"):
        db.ips.seed("vbr1", ["10.0.0.4"])


def test_ip_leases_take_the_numerically_lowest_free_address(db: Database) -> None:
    db.ips.seed("vbr0", [f"10.0.0.{host}" for host in (100, 10, 9, 2)])
    assert [db.ips.lease("vbr0", f"vm-{n}") for n in range(4)] == [
        "10.0.0.2",
        "10.0.0.9",
        "10.0.0.10",
        "10.0.0.100",
    ]
    with pytest.raises(ConflictError, match=r"^no free addresses in vbr0$"):
        db.ips.lease("vbr0", "vm-4")
    with pytest.raises(ConflictError, match=r"^no free addresses in nowhere$"):
        db.ips.lease("nowhere", "vm-4")


def test_a_vm_leasing_again_keeps_its_address_until_released(db: Database) -> None:
    db.ips.seed("vbr0", ["10.0.0.2", "10.0.0.3"])
    address = db.ips.lease("vbr0", "web-1")
    assert db.ips.lease("vbr0", "web-1") == address
    [lease] = db.ips.leases("web-1")
    assert (lease.address, lease.network, lease.vm_name) == (address, "vbr0", "web-1")
    assert db.ips.release("web-1") == 1
    assert db.ips.leases("web-1") == []
    assert db.ips.lease("vbr0", "web-2") == address


def test_pruning_drops_free_addresses_outside_the_pool_but_keeps_held_ones(db: Database) -> None:
    db.ips.seed("vbr0", ["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    held = db.ips.lease("vbr0", "web-1")
    assert db.ips.prune("vbr0", keep=["10.0.0.4", "10.1.0.2"]) == 1  # the subnet changed
    assert db.ips.leases("web-1")[0].address == held == "10.0.0.2"
    assert db.ips.lease("vbr0", "web-2") == "10.0.0.4"
    with pytest.raises(ConflictError):
        db.ips.lease("vbr0", "web-3")  # 10.0.0.3 is gone from the pool


def test_addresses_held_by_names_that_are_no_vm_are_freed(db: Database) -> None:
    db.ips.seed("vbr0", ["10.0.0.2", "10.0.0.3"])
    db.ips.lease("vbr0", "ghost")
    assert db.ips.release_orphans() == 1
    assert db.ips.leases("ghost") == [] and db.ips.lease("vbr0", "web-1") == "10.0.0.2"
