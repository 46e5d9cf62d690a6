"""Guest IP addresses leased from per-network pools (bridged networking)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from volantd.store.errors import ConflictError
from volantd.store.schema import ip_leases, utc_now, vms
from volantd.store.transactions import Transactions


@dataclass(frozen=True, kw_only=True)
class IPLease:
    """Address `address` of `network`, held by `vm_name` since `leased_at`."""

    address: str
    network: str
    vm_name: str
    leased_at: datetime


class IPLeaseRepository:
    """Address pools, one per network, and the VMs holding their addresses."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def seed(self, network: str, addresses: Iterable[str]) -> int:
        """Add `addresses` to the pool of `network`; returns how many were new.

        Seeding again is harmless. `ConflictError` for an address in another network's pool.
        """
        wanted = {str(ipaddress.ip_address(address)) for address in addresses}
        with self._tx.write() as conn:
            known = dict(conn.execute(sa.select(ip_leases.c.address, ip_leases.c.network)).all())
            known = {address: known[address] for address in wanted & known.keys()}
            for address, other in sorted(known.items()):
                if other != network:
                    raise ConflictError(f"address {address} already belongs to network {other}")
            new = sorted(wanted - known.keys(), key=_address_key)
            if new:
                conn.execute(
                    ip_leases.insert(),
                    [{"address": address, "network": network} for address in new],
                )
            return len(new)

    def lease(self, network: str, vm_name: str) -> str:
        """Lease the lowest free address of `network` to `vm_name`.

        A VM that already holds an address in `network` gets that address again.
        `ConflictError` when the pool has nothing free.
        """
        in_network = ip_leases.c.network == network
        with self._tx.write() as conn:
            held = conn.scalar(
                sa.select(ip_leases.c.address).where(in_network, ip_leases.c.vm_name == vm_name)
            )
            if held is not None:
                return held
            free = conn.scalars(
                sa.select(ip_leases.c.address).where(in_network, ip_leases.c.vm_name.is_(None))
            )
            for address in sorted(free, key=_address_key):
                leased = conn.execute(
                    ip_leases.update()
                    .where(ip_leases.c.address == address, ip_leases.c.vm_name.is_(None))
                    .values(vm_name=vm_name, leased_at=utc_now())
                ).rowcount
                if leased:
                    return address
        raise ConflictError(f"no free addresses in {network}")

    def prune(self, network: str, keep: Iterable[str]) -> int:
        """Drop the free addresses of `network` not in `keep` (its subnet changed); held ones
        stay until their VM is deleted. Returns how many went."""
        kept = {str(ipaddress.ip_address(address)) for address in keep}
        with self._tx.write() as conn:
            free = conn.scalars(
                sa.select(ip_leases.c.address).where(
                    ip_leases.c.network == network, ip_leases.c.vm_name.is_(None)
                )
            ).all()
            gone = [address for address in free if address not in kept]
            for address in gone:
                conn.execute(
                    ip_leases.delete().where(
                        ip_leases.c.address == address, ip_leases.c.vm_name.is_(None)
                    )
                )
            return len(gone)

    def release_orphans(self) -> int:
        """Free the addresses held by names that are no VM (a store edited by hand, or an
        older volantd); returns how many."""
        with self._tx.write() as conn:
            return conn.execute(
                ip_leases.update()
                .where(
                    ip_leases.c.vm_name.is_not(None),
                    ip_leases.c.vm_name.not_in(sa.select(vms.c.name)),
                )
                .values(vm_name=None, leased_at=None)
            ).rowcount

    def release(self, vm_name: str) -> int:
        """Return every address `vm_name` holds to its pool; returns how many."""
        with self._tx.write() as conn:
            return conn.execute(
                ip_leases.update()
                .where(ip_leases.c.vm_name == vm_name)
                .values(vm_name=None, leased_at=None)
            ).rowcount

    def leases(self, vm_name: str) -> list[IPLease]:
        """The addresses `vm_name` holds."""
        query = sa.select(ip_leases).where(ip_leases.c.vm_name == vm_name)
        with self._tx.read() as conn:
            leases = [IPLease(**row._mapping) for row in conn.execute(query)]
        return sorted(leases, key=lambda lease: _address_key(lease.address))


def _address_key(address: str) -> tuple[int, int]:
    # Numeric order: 10.0.0.9 before 10.0.0.10 (text order gets that wrong).
    parsed = ipaddress.ip_address(address)
    return parsed.version, int(parsed)
