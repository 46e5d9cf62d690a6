"""VMs and their versioned configuration documents."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from volantd.store.errors import ConflictError, NotFoundError, StoreError
from volantd.store.schema import (
    deployments,
    ip_leases,
    plugins,
    port_leases,
    utc_now,
    vm_configs,
    vms,
)
from volantd.store.transactions import Transactions


@dataclass(frozen=True, kw_only=True)
class VMRecord:
    """A VM as the store knows it.

    `id`, `config_version`, `created_at` and `updated_at` are set by the store (`id` is 0
    and `config_version` 0 before the VM is stored).
    """

    name: str
    plugin: str
    runtime: str
    status: str
    cpu_cores: int
    memory_mb: int
    mac_address: str
    network_mode: str
    hypervisor: str
    run_dir: Path
    kernel_cmdline: str | None = None
    ip_address: str | None = None
    accel: str | None = None
    pid: int | None = None
    monitor_pid: int | None = None
    agent_port: int | None = None
    deployment: str | None = None
    boot: dict[str, Any] | None = None
    last_error: str | None = None
    id: int = 0
    config_version: int = 0
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)

    @property
    def agent_url(self) -> str | None:
        """Where volantd reaches the VM's agent while it runs: the guest's bridge address, or
        a loopback forward."""
        if not self.agent_port:
            return None
        on_bridge = self.network_mode in BRIDGE_MODES and self.ip_address
        return f"http://{self.ip_address if on_bridge else '127.0.0.1'}:{self.agent_port}"


BRIDGE_MODES = ("bridged", "dhcp")
"""Network modes whose guests have an address on the host bridge."""


@dataclass(frozen=True, kw_only=True)
class VMConfigVersion:
    """One version of a VM's configuration document; versions count up from 1."""

    vm_name: str
    version: int
    config: dict[str, Any]
    created_at: datetime


SORT_COLUMNS = {
    "name": vms.c.name,
    "status": vms.c.status,
    "runtime": vms.c.runtime,
    "created_at": vms.c.created_at,
    "updated_at": vms.c.updated_at,
}
"""The columns `VMRepository.list` sorts by; any other sort key means `created_at`."""

UPDATABLE_FIELDS = frozenset(f.name for f in fields(VMRecord)) - {
    "id",
    "name",
    "config_version",
    "created_at",
    "updated_at",
}
"""What `VMRepository.update` may change (`config_version` moves with `put_config`)."""


class VMRepository:
    """VMs by name, with their configuration history."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def create(self, record: VMRecord, config: dict[str, Any]) -> VMRecord:
        """Store a new VM with `config` as its configuration version 1, atomically.

        `ConflictError` if the name or MAC address is taken (of concurrent creates with one
        name exactly one succeeds); `NotFoundError` for an unknown plugin or deployment.
        """
        values = asdict(record)
        del values["id"]
        now = utc_now()
        values.update(run_dir=str(record.run_dir), config_version=1, created_at=now, updated_at=now)
        try:
            with self._tx.write() as conn:
                if _find(conn, record.name) is not None:
                    raise ConflictError(f'vm "{record.name}" already exists')
                _check(conn, record.name, values)
                vm_id = conn.execute(vms.insert().values(values).returning(vms.c.id)).scalar_one()
                conn.execute(
                    vm_configs.insert().values(
                        vm_id=vm_id, version=1, config=config, created_at=now
                    )
                )
                return _get(conn, record.name)
        except IntegrityError as exc:
            raise ConflictError(f'vm "{record.name}" clashes with stored data: {exc.orig}') from exc

    def get(self, name: str) -> VMRecord:
        """The VM called `name`; `NotFoundError` if there is none."""
        with self._tx.read() as conn:
            return _get(conn, name)

    def find(self, name: str) -> VMRecord | None:
        """The VM called `name`, or None."""
        with self._tx.read() as conn:
            return _find(conn, name)

    def list(
        self,
        *,
        status: Iterable[str] | None = None,
        runtime: str | None = None,
        plugin: str | None = None,
        q: str | None = None,
        sort: str = "created_at",
        order: str = "asc",
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[builtins.list[VMRecord], int]:
        """One page of the VMs that pass every given filter, and how many pass in all.

        Filters ignore case: `status` keeps VMs in any of the statuses, `runtime` and
        `plugin` compare for equality, `q` looks for a substring of name, IP address or
        runtime. `sort` is a key of `SORT_COLUMNS` (anything else sorts by `created_at`),
        `order` is "asc" or "desc"; `limit=None` means no limit.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        conditions: builtins.list[sa.ColumnElement[bool]] = []
        if statuses := {value.lower() for value in status or ()}:
            conditions.append(sa.func.lower(vms.c.status).in_(sorted(statuses)))
        if runtime is not None:
            conditions.append(sa.func.lower(vms.c.runtime) == runtime.lower())
        if plugin is not None:
            conditions.append(sa.func.lower(vms.c.plugin) == plugin.lower())
        if q:
            needle = q.lower()
            conditions.append(
                sa.or_(
                    *(
                        sa.func.lower(column).contains(needle, autoescape=True)
                        for column in (vms.c.name, vms.c.ip_address, vms.c.runtime)
                    )
                )
            )
        column = SORT_COLUMNS.get(sort, vms.c.created_at)
        descending = order.lower() == "desc"
        ordering = [column.desc(), vms.c.id.desc()] if descending else [column, vms.c.id]
        query = sa.select(vms).where(*conditions).order_by(*ordering).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        counting = sa.select(sa.func.count()).select_from(vms).where(*conditions)
        with self._tx.read() as conn:
            records = [vm_from_row(row) for row in conn.execute(query)]
            return records, conn.execute(counting).scalar_one()

    def update(self, name: str, /, **changes: Any) -> VMRecord:
        """Change some of a VM's fields (see `UPDATABLE_FIELDS`); returns the new record.

        `TypeError` for a field that does not exist or cannot change; `updated_at` moves.
        """
        if unknown := set(changes) - UPDATABLE_FIELDS:
            raise TypeError(
                f"VMRepository.update() cannot set {', '.join(sorted(unknown))}; "
                f"it sets {', '.join(sorted(UPDATABLE_FIELDS))}"
            )
        if "run_dir" in changes:
            changes["run_dir"] = str(changes["run_dir"])
        try:
            with self._tx.write() as conn:
                _get(conn, name)
                _check(conn, name, changes)
                conn.execute(
                    vms.update()
                    .where(vms.c.name == name)
                    .values({**changes, "updated_at": utc_now()})
                )
                return _get(conn, name)
        except IntegrityError as exc:
            raise ConflictError(f'vm "{name}" clashes with stored data: {exc.orig}') from exc

    def delete(self, name: str) -> None:
        """Forget a VM, its configuration history and its port and IP leases, atomically."""
        with self._tx.write() as conn:
            deleted = conn.execute(vms.delete().where(vms.c.name == name)).rowcount
            if deleted == 0:
                raise NotFoundError(f'vm "{name}" not found')
            conn.execute(port_leases.delete().where(port_leases.c.vm_name == name))
            conn.execute(
                ip_leases.update()
                .where(ip_leases.c.vm_name == name)
                .values(vm_name=None, leased_at=None)
            )

    def config(self, name: str) -> VMConfigVersion:
        """The VM's current configuration (its highest version)."""
        query = _config_query().where(
            vms.c.name == name, vm_configs.c.version == vms.c.config_version
        )
        with self._tx.read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(f'vm "{name}" not found')
        return VMConfigVersion(**row._mapping)

    def config_history(self, name: str, limit: int | None = None) -> builtins.list[VMConfigVersion]:
        """The VM's configuration versions, newest first; at most `limit` if given."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        query = _config_query().where(vms.c.name == name).order_by(vm_configs.c.version.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._tx.read() as conn:
            _get(conn, name)
            return [VMConfigVersion(**row._mapping) for row in conn.execute(query)]

    def put_config(self, name: str, config: dict[str, Any]) -> VMConfigVersion:
        """Store `config` as the VM's next configuration version and make it current."""
        now = utc_now()
        with self._tx.write() as conn:
            row = conn.execute(
                sa.select(vms.c.id, vms.c.config_version)
                .where(vms.c.name == name)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFoundError(f'vm "{name}" not found')
            version = row.config_version + 1
            conn.execute(
                vm_configs.insert().values(
                    vm_id=row.id, version=version, config=config, created_at=now
                )
            )
            conn.execute(
                vms.update()
                .where(vms.c.id == row.id)
                .values(config_version=version, updated_at=now)
            )
        return VMConfigVersion(vm_name=name, version=version, config=config, created_at=now)


def vm_from_row(row: Row[Any]) -> VMRecord:
    """The record of a full `vms` row."""
    values = dict(row._mapping)
    values["run_dir"] = Path(values["run_dir"])
    return VMRecord(**values)


def _find(conn: Connection, name: str) -> VMRecord | None:
    row = conn.execute(sa.select(vms).where(vms.c.name == name)).first()
    return None if row is None else vm_from_row(row)


def _get(conn: Connection, name: str) -> VMRecord:
    if (record := _find(conn, name)) is None:
        raise NotFoundError(f'vm "{name}" not found')
    return record


def _config_query() -> sa.Select[Any]:
    return sa.select(
        vms.c.name.label("vm_name"),
        vm_configs.c.version,
        vm_configs.c.config,
        vm_configs.c.created_at,
    ).join_from(vms, vm_configs, vm_configs.c.vm_id == vms.c.id)


def _check(conn: Connection, name: str, values: dict[str, Any]) -> None:
    """Refuse, with a message naming the culprit, values the database would reject."""
    for resource in ("cpu_cores", "memory_mb"):
        if resource in values and values[resource] <= 0:
            raise StoreError(f'vm "{name}": {resource} must be > 0, got {values[resource]}')
    if (mac := values.get("mac_address")) is not None:
        owner = conn.scalar(
            sa.select(vms.c.name).where(vms.c.mac_address == mac, vms.c.name != name)
        )
        if owner is not None:
            raise ConflictError(f'MAC address {mac} is already used by vm "{owner}"')
    plugin = values.get("plugin")
    if plugin is not None and not _exists(conn, plugins.c.name, plugin):
        raise NotFoundError(f'plugin "{plugin}" not found')
    deployment = values.get("deployment")
    if deployment is not None and not _exists(conn, deployments.c.name, deployment):
        raise NotFoundError(f'deployment "{deployment}" not found')


def _exists(conn: Connection, column: sa.Column[str], value: str) -> bool:
    return conn.scalar(sa.select(column).where(column == value)) is not None
