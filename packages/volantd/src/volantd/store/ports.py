"""Host loopback ports forwarded to guests; no port is ever leased twice."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from volantd.store.errors import ConflictError
from volantd.store.schema import port_leases, utc_now
from volantd.store.transactions import Transactions


@dataclass(frozen=True, kw_only=True)
class PortLease:
    """Host port `port`, held by VM `vm_name` for `purpose` ("agent", "expose:http", ...)."""

    port: int
    vm_name: str
    purpose: str
    leased_at: datetime


class PortLeaseRepository:
    """Leases of host ports, at most one per VM and purpose."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def lease(self, vm_name: str, purpose: str, candidates: Iterable[int]) -> int:
        """Lease the first of `candidates` nobody holds, to `vm_name` for `purpose`.

        A VM that already holds a port for `purpose` gets that port again, so a retried
        step leases nothing new. Concurrent callers never get the same port.
        `ConflictError` if every candidate is taken.
        """
        with self._tx.write() as conn:
            held = conn.scalar(
                sa.select(port_leases.c.port).where(
                    port_leases.c.vm_name == vm_name, port_leases.c.purpose == purpose
                )
            )
            if held is not None:
                return held
            taken = set(conn.scalars(sa.select(port_leases.c.port)))
            for port in candidates:
                if port in taken:
                    continue
                try:
                    with conn.begin_nested():
                        conn.execute(
                            port_leases.insert().values(
                                port=port, vm_name=vm_name, purpose=purpose, leased_at=utc_now()
                            )
                        )
                except IntegrityError:  # leased meanwhile by a backend that did not wait
                    continue
                return port
        raise ConflictError(
            f'no free host port for vm "{vm_name}" ({purpose}) among the candidates'
        )

    def release(self, vm_name: str) -> int:
        """Give back every port `vm_name` holds; returns how many."""
        with self._tx.write() as conn:
            return conn.execute(
                port_leases.delete().where(port_leases.c.vm_name == vm_name)
            ).rowcount

    def leases(self, vm_name: str) -> list[PortLease]:
        """The ports `vm_name` holds, by port."""
        return self._select(port_leases.c.vm_name == vm_name)

    def all(self) -> list[PortLease]:
        """Every lease, by port."""
        return self._select(sa.true())

    def _select(self, condition: sa.ColumnElement[bool]) -> list[PortLease]:
        query = sa.select(port_leases).where(condition).order_by(port_leases.c.port)
        with self._tx.read() as conn:
            return [PortLease(**row._mapping) for row in conn.execute(query)]
