"""Claims on host PCI devices: which VM (or operator) holds a device volantd bound to
vfio-pci, and the driver it had before, so the device can be given back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from volantd.store.errors import ConflictError, NotFoundError
from volantd.store.schema import device_claims, utc_now
from volantd.store.transactions import Transactions


@dataclass(frozen=True, kw_only=True)
class DeviceClaim:
    """PCI device `address`, held by VM `vm_name` (None: bound by an operator through the
    API) since `bound_at`; `original_driver` is the host driver it had (None: none)."""

    address: str
    vm_name: str | None
    original_driver: str | None
    bound_at: datetime

    @property
    def holder(self) -> str:
        """Who holds it, for messages: ``vm "web-1"`` or ``an operator (volar devices bind)``."""
        if self.vm_name is None:
            return "an operator (volar devices bind)"
        return f'vm "{self.vm_name}"'


class DeviceClaimRepository:
    """At most one claim per device; a VM's claims are taken or refused together."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def claim(self, vm_name: str | None, originals: Mapping[str, str | None]) -> list[DeviceClaim]:
        """Claim every address of `originals` (address → its current driver) for `vm_name`
        (None: the operator), all or none.

        A device the claimant already holds keeps its claim and its original driver, so a
        retried step changes nothing; a VM takes over a device an operator bound (keeping
        the original driver too). `ConflictError` naming the holder when another VM holds
        one, or a VM holds one the operator asks for.
        """
        addresses = sorted(originals)
        with self._tx.write() as conn:
            held = {
                claim.address: claim
                for claim in self._rows(conn, device_claims.c.address.in_(addresses))
            }
            for address in addresses:
                claim = held.get(address)
                if claim is not None and claim.vm_name not in (vm_name, None):
                    raise ConflictError(f"PCI device {address} is claimed by {claim.holder}")
            now = utc_now()
            for address in addresses:
                claim = held.get(address)
                if claim is None:
                    values = {"vm_name": vm_name, "original_driver": originals[address]}
                    conn.execute(
                        device_claims.insert().values(address=address, bound_at=now, **values)
                    )
                elif claim.vm_name != vm_name:  # a VM takes over what an operator bound
                    conn.execute(
                        device_claims.update()
                        .where(device_claims.c.address == address)
                        .values(vm_name=vm_name)
                    )
            return self._rows(conn, device_claims.c.address.in_(addresses))

    def release(self, address: str) -> bool:
        """Forget the claim on `address` (its device is back with the host); whether one was."""
        with self._tx.write() as conn:
            deleted = conn.execute(device_claims.delete().where(device_claims.c.address == address))
            return deleted.rowcount > 0

    def get(self, address: str) -> DeviceClaim:
        claim = self.find(address)
        if claim is None:
            raise NotFoundError(f"PCI device {address} is not claimed")
        return claim

    def find(self, address: str) -> DeviceClaim | None:
        with self._tx.read() as conn:
            claims = self._rows(conn, device_claims.c.address == address)
        return claims[0] if claims else None

    def held_by(self, vm_name: str | None) -> list[DeviceClaim]:
        """The claims of VM `vm_name` (None: the operator's), by address."""
        condition: sa.ColumnElement[bool] = (
            device_claims.c.vm_name.is_(None)
            if vm_name is None
            else device_claims.c.vm_name == vm_name
        )
        with self._tx.read() as conn:
            return self._rows(conn, condition)

    def all(self) -> list[DeviceClaim]:
        """Every claim, by address."""
        with self._tx.read() as conn:
            return self._rows(conn, sa.true())

    @staticmethod
    def _rows(conn: sa.Connection, condition: sa.ColumnElement[bool]) -> list[DeviceClaim]:
        query = sa.select(device_claims).where(condition).order_by(device_claims.c.address)
        return [DeviceClaim(**row._mapping) for row in conn.execute(query)]
