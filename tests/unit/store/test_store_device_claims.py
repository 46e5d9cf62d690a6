"""Claims on host PCI devices: one holder per device, a VM's claims all or none."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from volantd.store import ConflictError, Database, NotFoundError, VMRecord

MakeVM = Callable[..., VMRecord]


def test_a_claim_remembers_the_holder_and_the_original_driver(db: Database) -> None:
    claims = db.device_claims.claim("web-1", {"0000:01:00.0": "nouveau", "0000:04:00.0": None})
    assert [(c.address, c.vm_name, c.original_driver) for c in claims] == [
        ("0000:01:00.0", "web-1", "nouveau"),
        ("0000:04:00.0", "web-1", None),
    ]
    assert db.device_claims.get("0000:01:00.0") == claims[0]
    assert db.device_claims.held_by("web-1") == claims
    assert db.device_claims.all() == claims


def test_claiming_again_keeps_the_first_original_driver(db: Database) -> None:
    first = db.device_claims.claim("web-1", {"0000:01:00.0": "nouveau"})
    # a retried start sees the device on vfio-pci already: the original stays nouveau
    assert db.device_claims.claim("web-1", {"0000:01:00.0": "vfio-pci"}) == first


def test_another_vm_is_refused_and_claims_nothing(db: Database) -> None:
    db.device_claims.claim("web-1", {"0000:01:00.0": "nouveau"})
    with pytest.raises(ConflictError, match=r'PCI device 0000:01:00\.0 is claimed by vm "web-1"'):
        db.device_claims.claim("web-2", {"0000:02:00.0": "igb", "0000:01:00.0": "nouveau"})
    assert db.device_claims.find("0000:02:00.0") is None
    with pytest.raises(ConflictError, match=r'claimed by vm "web-1"'):
        db.device_claims.claim(None, {"0000:01:00.0": "nouveau"})  # nor can an operator


def test_a_vm_takes_over_what_an_operator_bound(db: Database) -> None:
    db.device_claims.claim(None, {"0000:01:00.0": "nouveau"})
    assert db.device_claims.get("0000:01:00.0").holder == "an operator (volar devices bind)"
    [claim] = db.device_claims.claim("web-1", {"0000:01:00.0": "vfio-pci"})
    assert (claim.vm_name, claim.original_driver) == ("web-1", "nouveau")
    assert db.device_claims.held_by(None) == []


def test_released_devices_can_be_claimed_by_anyone(db: Database) -> None:
    db.device_claims.claim("web-1", {"0000:01:00.0": "nouveau"})
    assert db.device_claims.release("0000:01:00.0") is True
    assert db.device_claims.release("0000:01:00.0") is False
    with pytest.raises(NotFoundError, match="is not claimed"):
        db.device_claims.get("0000:01:00.0")
    assert db.device_claims.claim("web-2", {"0000:01:00.0": "nouveau"})[0].vm_name == "web-2"


def test_deleting_a_vm_keeps_its_claims_until_the_devices_are_given_back(
    db: Database, make_vm: MakeVM
) -> None:
    make_vm("web-1")
    db.device_claims.claim("web-1", {"0000:01:00.0": "nouveau"})
    db.vms.delete("web-1")
    assert db.device_claims.get("0000:01:00.0").vm_name == "web-1"
