"""Deployments: named groups of VM replicas made from one configuration template."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from volantd.store.errors import ConflictError, NotFoundError, StoreError
from volantd.store.schema import deployments, utc_now, vms
from volantd.store.transactions import Transactions
from volantd.store.vms import VMRecord, vm_from_row


@dataclass(frozen=True, kw_only=True)
class DeploymentRecord:
    """A deployment. The store sets `created_at` and `updated_at` when it writes."""

    name: str
    desired_replicas: int
    config: dict[str, Any]
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)


class DeploymentRepository:
    """Deployments by name, and the VMs that belong to each."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def add(self, record: DeploymentRecord) -> DeploymentRecord:
        """Store a new deployment; `ConflictError` if the name is taken."""
        _check_replicas(record.name, record.desired_replicas)
        now = utc_now()
        with self._tx.write() as conn:
            if _find(conn, record.name) is not None:
                raise ConflictError(f'deployment "{record.name}" already exists')
            conn.execute(
                deployments.insert().values(
                    name=record.name,
                    desired_replicas=record.desired_replicas,
                    config=record.config,
                    created_at=now,
                    updated_at=now,
                )
            )
            return _get(conn, record.name)

    def get(self, name: str) -> DeploymentRecord:
        """The deployment called `name`; `NotFoundError` if there is none."""
        with self._tx.read() as conn:
            return _get(conn, name)

    def find(self, name: str) -> DeploymentRecord | None:
        """The deployment called `name`, or None."""
        with self._tx.read() as conn:
            return _find(conn, name)

    def list(self) -> builtins.list[DeploymentRecord]:
        """Every deployment, by name."""
        with self._tx.read() as conn:
            rows = conn.execute(sa.select(deployments).order_by(deployments.c.name))
            return [DeploymentRecord(**row._mapping) for row in rows]

    def set_replicas(self, name: str, desired_replicas: int) -> DeploymentRecord:
        """Change how many replicas the deployment should have (>= 0)."""
        _check_replicas(name, desired_replicas)
        return self._change(name, desired_replicas=desired_replicas)

    def update_config(self, name: str, config: dict[str, Any]) -> DeploymentRecord:
        """Replace the configuration template that new replicas are made from."""
        return self._change(name, config=config)

    def remove(self, name: str) -> None:
        """Forget a deployment; VMs that belonged to it stay, with no deployment."""
        with self._tx.write() as conn:
            if conn.execute(deployments.delete().where(deployments.c.name == name)).rowcount == 0:
                raise NotFoundError(f'deployment "{name}" not found')

    def members(self, name: str) -> builtins.list[VMRecord]:
        """The deployment's VMs, by name."""
        with self._tx.read() as conn:
            _get(conn, name)
            rows = conn.execute(sa.select(vms).where(vms.c.deployment == name).order_by(vms.c.name))
            return [vm_from_row(row) for row in rows]

    def _change(self, name: str, **values: Any) -> DeploymentRecord:
        with self._tx.write() as conn:
            changed = conn.execute(
                deployments.update()
                .where(deployments.c.name == name)
                .values(**values, updated_at=utc_now())
            )
            if changed.rowcount == 0:
                raise NotFoundError(f'deployment "{name}" not found')
            return _get(conn, name)


def _check_replicas(name: str, desired_replicas: int) -> None:
    if desired_replicas < 0:
        raise StoreError(
            f'deployment "{name}": desired replicas must be >= 0, got {desired_replicas}'
        )


def _find(conn: Connection, name: str) -> DeploymentRecord | None:
    row = conn.execute(sa.select(deployments).where(deployments.c.name == name)).first()
    return None if row is None else DeploymentRecord(**row._mapping)


def _get(conn: Connection, name: str) -> DeploymentRecord:
    if (record := _find(conn, name)) is None:
        raise NotFoundError(f'deployment "{name}" not found')
    return record
