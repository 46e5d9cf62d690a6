"""Installed plugins: their normalised manifests and whether new VMs may use them."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from volantd.store.artifacts import ArtifactRecord, write_artifact
from volantd.store.errors import ConflictError, NotFoundError
from volantd.store.schema import plugins, utc_now, vms
from volantd.store.transactions import Transactions


@dataclass(frozen=True, kw_only=True)
class PluginRecord:
    """An installed plugin. The store sets `installed_at` and `updated_at` when it writes."""

    name: str
    version: str
    runtime: str
    manifest: dict[str, Any]
    enabled: bool = True
    installed_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)


class PluginRepository:
    """Plugins by name."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    def add(self, record: PluginRecord) -> PluginRecord:
        """Install a plugin; `ConflictError` if one with that name is installed."""
        with self._tx.write() as conn:
            if _find(conn, record.name) is not None:
                raise ConflictError(f'plugin "{record.name}" already exists')
            now = utc_now()
            conn.execute(
                plugins.insert().values(asdict(replace(record, installed_at=now, updated_at=now)))
            )
            return _get(conn, record.name)

    def replace(self, record: PluginRecord) -> PluginRecord:
        """Install or replace a plugin; a replaced plugin keeps its `installed_at`."""
        return self.install(record, ())

    def install(self, record: PluginRecord, artifacts: Iterable[ArtifactRecord]) -> PluginRecord:
        """`replace` the plugin and `put` its artifact records, all in one transaction.

        Artifact records of other versions stay until `ArtifactRepository.delete` drops them.
        """
        records = builtins.list(artifacts)
        for artifact in records:
            if artifact.plugin_name != record.name:
                raise ValueError(
                    f'artifact "{artifact.name}" belongs to plugin "{artifact.plugin_name}", '
                    f'not "{record.name}"'
                )
        with self._tx.write() as conn:
            existing = _find(conn, record.name)
            now = utc_now()
            installed_at = now if existing is None else existing.installed_at
            values = asdict(replace(record, installed_at=installed_at, updated_at=now))
            if existing is None:
                conn.execute(plugins.insert().values(values))
            else:
                conn.execute(plugins.update().where(plugins.c.name == record.name).values(values))
            for artifact in records:
                write_artifact(conn, artifact)
            return _get(conn, record.name)

    def get(self, name: str) -> PluginRecord:
        """The plugin called `name`; `NotFoundError` if it is not installed."""
        with self._tx.read() as conn:
            return _get(conn, name)

    def find(self, name: str) -> PluginRecord | None:
        """The plugin called `name`, or None."""
        with self._tx.read() as conn:
            return _find(conn, name)

    def list(self) -> builtins.list[PluginRecord]:
        """Every installed plugin, by name."""
        with self._tx.read() as conn:
            rows = conn.execute(sa.select(plugins).order_by(plugins.c.name))
            return [PluginRecord(**row._mapping) for row in rows]

    def set_enabled(self, name: str, enabled: bool) -> PluginRecord:
        """Enable or disable a plugin; disabled plugins keep their VMs but get no new ones."""
        with self._tx.write() as conn:
            result = conn.execute(
                plugins.update()
                .where(plugins.c.name == name)
                .values(enabled=enabled, updated_at=utc_now())
            )
            if result.rowcount == 0:
                raise NotFoundError(f'plugin "{name}" not found')
            return _get(conn, name)

    def in_use_by(self, name: str) -> builtins.list[str]:
        """Names of the VMs created from plugin `name`, sorted."""
        with self._tx.read() as conn:
            return _users(conn, name)

    def remove(self, name: str) -> None:
        """Uninstall a plugin and its artifact records.

        `ConflictError` naming the VMs if any still use it: delete those first.
        """
        with self._tx.write() as conn:
            if _find(conn, name) is None:
                raise NotFoundError(f'plugin "{name}" not found')
            if users := _users(conn, name):
                names = ", ".join(f'"{user}"' for user in users)
                raise ConflictError(
                    f'plugin "{name}" is still used by vms {names}; delete those vms first'
                )
            conn.execute(plugins.delete().where(plugins.c.name == name))


def _find(conn: Connection, name: str) -> PluginRecord | None:
    row = conn.execute(sa.select(plugins).where(plugins.c.name == name)).first()
    return None if row is None else PluginRecord(**row._mapping)


def _get(conn: Connection, name: str) -> PluginRecord:
    if (record := _find(conn, name)) is None:
        raise NotFoundError(f'plugin "{name}" not found')
    return record


def _users(conn: Connection, name: str) -> list[str]:
    return list(
        conn.scalars(sa.select(vms.c.name).where(vms.c.plugin == name).order_by(vms.c.name))
    )
